"""The GPU benchmarks' CPU-checkable parts: the tuned-config files vLLM reads, the phase grammar, the
profiler-trace summary. (The GPU runs themselves are in bench/results/.)"""
from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest

from bench.gpu_lora import kernel_kind, parse_phase, phase_env, summarise_trace
from bench.lora_kernels import config_files, nested_set


def test_tuned_config_files_are_read_by_vllm(tmp_path, monkeypatch):
    """vLLM's own lookup (get_lora_op_configs) finds our configs: exact keys and nearest-key fallback."""
    import torch
    from vllm.lora.ops.triton_ops import utils as lora_utils

    tuned = {"shrink": {}, "expand": {}}
    for m in (64, 256, 2048):
        for slices, k in ((3, 4096), (1, 4096), (2, 4096), (1, 14336)):
            nested_set(tuned["shrink"], [17, slices, m, k, 8], {"block_m": m, "from": f"shrink-{slices}-{k}"})
            n = 14336 if slices == 2 else 4096
            nested_set(tuned["expand"], [17, slices, m, 8, n], {"block_m": m, "from": f"expand-{slices}-{n}"})
    files = config_files("NVIDIA H200", tuned)
    assert set(files) == {"NVIDIA_H200_SHRINK.json", "NVIDIA_H200_EXPAND_TRUE.json", "NVIDIA_H200_EXPAND_FALSE.json"}
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setenv("VLLM_TUNED_CONFIG_FOLDER", str(tmp_path))
    lora_utils.load_lora_op_config.cache_clear()
    lora_utils.get_lora_op_configs.cache_clear()
    try:
        get = lora_utils.get_lora_op_configs
        assert get("shrink", 17, 256, 14336, 8, 1) == {"block_m": 256, "from": "shrink-1-14336"}
        # batch 200 -> nearest tuned batch 256; max_loras 6 -> the only tuned value (17)
        assert get("shrink", 6, 200, 4096, 8, 3) == {"block_m": 256, "from": "shrink-3-4096"}
        assert get("expand", 17, 8192, 14336, 8, 2, add_inputs=True) == {"block_m": 2048, "from": "expand-2-14336"}
        assert get("expand", 17, 1, 4096, 8, 1, add_inputs=False) == {"block_m": 64, "from": "expand-1-4096"}
    finally:
        lora_utils.load_lora_op_config.cache_clear()
        lora_utils.get_lora_op_configs.cache_clear()


def test_phase_grammar():
    assert parse_phase("base", 16) == dict(phase="base", lora=False, max_loras=None, specialize_active_lora=False,
                                         dual_stream=False, tuned_configs=False, attention_only=False,
                                         segmented=None, rows=None)
    spec = parse_phase("lora8s+tuned+attn+rows=5.100", 16)
    assert (spec["max_loras"], spec["specialize_active_lora"], spec["tuned_configs"], spec["attention_only"],
            spec["dual_stream"], spec["segmented"], spec["rows"]) == (8, True, True, True, False, None,
                                                                            ["5", "100"])
    seg = parse_phase("lora100+seg", 16)
    assert seg["segmented"] == "1" and seg["max_loras"] == 100
    assert phase_env(seg, SimpleNamespace(tuned_configs=None))["ASSISTANT_SEGMENTED_LORA"] == "1"
    expand_only = parse_phase("lora16+segx", 16)
    assert phase_env(expand_only, SimpleNamespace(tuned_configs=None))["ASSISTANT_SEGMENTED_LORA"] == "expand"
    untuned = phase_env(spec | {"tuned_configs": False}, SimpleNamespace(tuned_configs=None))
    assert untuned["ASSISTANT_SEGMENTED_LORA"] is None
    assert parse_phase("lora", 16)["max_loras"] == 16
    for bad in ("lorax", "lora16+fast", "lora16+rows=7", "gpu"):
        with pytest.raises(SystemExit):
            parse_phase(bad, 16)


def test_trace_summary_sums_kernels_by_kind(tmp_path):
    events = [  # Chrome-trace kernel events as the torch profiler writes them (ts/dur in microseconds)
        {"cat": "kernel", "name": "_lora_shrink_kernel", "ts": 1000, "dur": 10},
        {"cat": "kernel", "name": "_lora_expand_kernel", "ts": 1020, "dur": 30},
        {"cat": "kernel", "name": "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "ts": 1060, "dur": 100},
        {"cat": "kernel", "name": "void flash::FlashAttnFwdSm90<...>", "ts": 1200, "dur": 50},
        {"cat": "kernel", "name": "void at::native::vectorized_elementwise_kernel<8, FillFunctor>",
         "ts": 1260, "dur": 5},
        {"cat": "cpu_op", "name": "aten::mm", "ts": 900, "dur": 500},
    ]
    with gzip.open(tmp_path / "rank0.1.pt.trace.json.gz", "wt") as fh:
        json.dump({"traceEvents": events}, fh)
    summary = summarise_trace(tmp_path, steps=2)
    assert summary["gpu_kernel_ms"] == 0.2  # 195 us of kernels; the CPU op is not counted
    assert summary["span_ms"] == 0.27 and summary["step_ms"] == 0.13  # 1000 -> 1265 us, over 2 steps
    assert summary["by_kind_ms"] == {"gemm": 0.1, "attention": 0.05, "lora_expand": 0.03, "lora_shrink": 0.01,
                                     "fill": 0.01}
    assert summary["top_kernels"][0]["name"].startswith("nvjet")
    assert summarise_trace(tmp_path / "missing", steps=1) is None
    assert kernel_kind("sm90_xmma_gemm_bf16bf16") == "gemm" and kernel_kind("triton_poi_fused_add_0") == "other"
