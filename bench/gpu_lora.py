"""Multi-LoRA serving cost on one GPU, through the project's own Engine (vLLM AsyncLLM).

One engine per configuration, the same fixed workload each time (random token prompts, fixed output
length with ignore_eos, dummy weights of a Llama-3-8B-shaped model, random rank-16 adapters on every
projection). Rows: LoRA disabled; LoRA enabled with no adapter in requests; 1 adapter; 5 adapters
(round-robin); 16; 100 (uniform random over max_cpu_loras = 100, so adapters swap in and out of the
GPU slots); and a RAG-shaped workload (1,500-token prompts that share a system prompt, prefix caching
on) without LoRA and with 5 adapters. Reported: output tokens/s, time to first token p50/p99, GPU memory.

A watchdog writes py-spy stack dumps of every process of the run when an engine has not started after
--watchdog seconds (how the LoRA start-up hang of vLLM 0.26 was found; see README, GPU section).

usage (GPU host): python -m bench.gpu_lora --out DIR [--phases base,lora] [--requests 1024]
       CPU smoke test of the script itself: python -m bench.gpu_lora --cpu-smoke --out /tmp/gl
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMA_8B = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, hidden_act="silu",
                tie_word_embeddings=False, torch_dtype="bfloat16", bos_token_id=1, eos_token_id=2)
TINY = LLAMA_8B | dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=32000, torch_dtype="float32")
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_model(root: Path, cfg: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg))
    return root


def build_adapters(root: Path, cfg: dict, n: int, rank: int, dtype: str = "bfloat16") -> list[Path]:
    """n distinct random LoRA adapters (one base draw, scaled per adapter: cheap to write, all different)."""
    import torch
    from safetensors.torch import save_file

    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    g = torch.Generator().manual_seed(0)
    tdtype = getattr(torch, dtype)
    base = {}
    for layer in range(cfg["num_hidden_layers"]):
        for name, (fan_in, fan_out) in shapes.items():
            group = "self_attn" if name in MODULES[:4] else "mlp"
            key = f"base_model.model.model.layers.{layer}.{group}.{name}"
            base[f"{key}.lora_A.weight"] = (torch.randn(rank, fan_in, generator=g) * 0.01).to(tdtype)
            base[f"{key}.lora_B.weight"] = (torch.randn(fan_out, rank, generator=g) * 0.01).to(tdtype)
    paths = []
    for a in range(n):
        path = root / f"a{a}"
        path.mkdir(parents=True, exist_ok=True)
        if not (path / "adapter_model.safetensors").is_file():
            save_file({k: (v * (1 + a / max(n, 1))).contiguous() for k, v in base.items()},
                      str(path / "adapter_model.safetensors"))
        (path / "adapter_config.json").write_text(json.dumps(dict(
            peft_type="LORA", r=rank, lora_alpha=2 * rank, target_modules=list(MODULES), bias="none",
            task_type="CAUSAL_LM", lora_dropout=0.0, fan_in_fan_out=False, use_rslora=False, use_dora=False)))
        paths.append(path)
    return paths


def gpu_memory_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
        return int(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


class Watchdog:
    """py-spy dumps of this process tree every `every` s once `after` s passed without stop()."""

    def __init__(self, out: Path, label: str, after: float, every: float = 60.0):
        self.out, self.label, self.after, self.every = out, label, after, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.after > 0 and shutil.which("py-spy"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _run(self):
        import psutil

        if self._stop.wait(self.after):
            return
        n = 0
        while not self._stop.is_set():
            n += 1
            procs = [psutil.Process()] + psutil.Process().children(recursive=True)
            with open(self.out / f"pyspy-{self.label}-{n}.txt", "w") as fh:
                for p in procs:
                    fh.write(f"===== pid {p.pid} {' '.join(p.cmdline())[:200]}\n")
                    fh.flush()
                    subprocess.run(["py-spy", "dump", "--pid", str(p.pid)], stdout=fh, stderr=subprocess.STDOUT,
                                   timeout=60)
            print(f"[watchdog] {self.label}: stack dump {n} written", flush=True)
            if self._stop.wait(self.every):
                return


def make_engine(model: Path, args, *, lora: bool, max_loras: int, label: str, extra: dict | None = None):
    from assistant.config import Settings
    from assistant.engine import Engine

    settings = Settings(max_model_len=args.max_model_len, max_loras=max_loras, max_lora_rank=args.rank,
                        max_cpu_loras=max(args.adapters, max_loras), max_num_seqs=args.max_num_seqs,
                        enforce_eager=args.eager, gpu_memory_utilization=args.gpu_util, kv_cache_gib=2)
    engine_args = {"load_format": "dummy", "skip_tokenizer_init": True} | (extra or {})
    started = time.perf_counter()
    with Watchdog(args.out, label, args.watchdog):
        engine = Engine(model, settings, dtype=args.dtype, enable_lora=lora, engine_args=engine_args)
    return engine, round(time.perf_counter() - started, 1)


def run(engine, label: str, prompts: list[list[int]], adapters: list[str | None], gen: int, **meta) -> dict:
    from assistant.engine import GenerationRequest

    def requests(ps, ads):
        return [GenerationRequest(prompt_token_ids=p, adapter=a, max_tokens=gen, ignore_eos=True)
                for p, a in zip(ps, ads)]

    engine.generate(requests(prompts[:16], adapters[:16]))  # warm-up: load the adapters, touch the kernels
    started = time.perf_counter()
    results = engine.generate(requests(prompts, adapters))
    wall = time.perf_counter() - started
    out_tokens = sum(len(r.token_ids) for r in results)
    ttft = sorted(r.first_token_s for r in results)
    row = dict(label=label, requests=len(prompts), prompt_tokens=len(prompts[0]), out_tokens=out_tokens,
               seconds=round(wall, 2), out_tok_s=round(out_tokens / wall, 1),
               ttft_p50_ms=round(statistics.median(ttft) * 1000, 1),
               ttft_p99_ms=round(ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))] * 1000, 1),
               gpu_mem_mib=gpu_memory_mib(), distinct_adapters=len({a for a in adapters if a})) | meta
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--phases", default="base,lora", help="base (LoRA disabled), lora (max_loras=16), lora8, ...")
    ap.add_argument("--requests", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--rag-requests", type=int, default=512)
    ap.add_argument("--rag-prompt", type=int, default=1500)
    ap.add_argument("--rag-shared", type=int, default=300, help="tokens of the shared system prompt")
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-loras", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--gpu-util", type=float, default=0.85)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs / torch.compile")
    ap.add_argument("--watchdog", type=float, default=240.0, help="py-spy dumps after N s of start-up (0 = off)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gpu_lora"))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model, few requests: checks the script on CPU")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = LLAMA_8B
    if args.cpu_smoke:
        cfg = TINY
        args.requests, args.prompt, args.gen, args.adapters, args.rank = 24, 32, 8, 6, 8
        args.rag_requests, args.rag_prompt, args.rag_shared = 8, 128, 32
        args.max_loras, args.max_num_seqs, args.max_model_len, args.dtype, args.eager = 4, 32, 512, "float32", True
    model = build_model(args.workdir / "model", cfg)
    t = time.perf_counter()
    paths = build_adapters(args.workdir / "adapters", cfg, args.adapters, args.rank,
                           "float32" if args.cpu_smoke else "bfloat16")
    adapters_s = round(time.perf_counter() - t, 1)
    rnd = random.Random(0)
    vocab = cfg["vocab_size"]
    prompts = [[rnd.randrange(1000, vocab - 1) for _ in range(args.prompt)] for _ in range(args.requests)]
    shared = [rnd.randrange(1000, vocab - 1) for _ in range(args.rag_shared)]
    rag = [shared + [rnd.randrange(1000, vocab - 1) for _ in range(args.rag_prompt - args.rag_shared)]
           for _ in range(args.rag_requests)]
    names = [f"a{i}" for i in range(len(paths))]
    result = {"benchmark": "gpu_lora", "model": "Llama-3-8B-shaped, dummy weights" if not args.cpu_smoke else "tiny llama (CPU smoke)",
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "adapters_written_s": adapters_s, "gpu": None, "vllm": None, "engines": [], "rows": []}
    try:
        import vllm

        result["vllm"] = vllm.__version__
        result["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True).stdout.strip() or None
    except (ImportError, OSError):
        pass
    path = args.out / "gpu_lora.json"

    def save():
        path.write_text(json.dumps(result, indent=2) + "\n")

    for phase in [p.strip() for p in args.phases.split(",") if p.strip()]:
        # phase: "base" (LoRA disabled) or "lora[N][s]": max_loras N (default --max-loras), "s" = CUDA
        # graphs specialised per number of active adapters (vLLM's specialize_active_lora)
        lora = phase != "base"
        spec = phase[4:]
        specialize = spec.endswith("s")
        digits = spec.rstrip("s")
        max_loras = int(digits) if lora and digits.isdigit() else args.max_loras
        extra = {"specialize_active_lora": True} if specialize else None
        engine, startup = make_engine(model, args, lora=lora, max_loras=max_loras, label=phase, extra=extra)
        result["engines"].append({"phase": phase, "lora": lora, "max_loras": max_loras if lora else None,
                                  "specialize_active_lora": specialize, "startup_s": startup,
                                  "flashinfer_sampler": os.environ.get("VLLM_USE_FLASHINFER_SAMPLER", "1"), "gpu_mem_mib_idle": gpu_memory_mib()})
        save()
        meta = {"phase": phase, "max_loras": max_loras if lora else None, "specialize_active_lora": specialize}
        try:
            if not lora:
                result["rows"].append(run(engine, "base (LoRA disabled)", prompts, [None] * len(prompts), args.gen, **meta))
                save()
                result["rows"].append(run(engine, "RAG-shaped, base (LoRA disabled)", rag, [None] * len(rag), args.gen, **meta))
            else:
                for name, path_ in zip(names, paths):
                    engine.register_adapter(name, path_, version="v1")
                n = len(prompts)
                plans = [("LoRA enabled, no adapter in requests", [None] * n),
                         ("1 adapter", [names[0]] * n),
                         ("5 adapters, round-robin", [names[i % 5] for i in range(n)])]
                if max_loras >= 16:
                    plans.append((f"{min(16, len(names))} adapters, round-robin", [names[i % min(16, len(names))] for i in range(n)]))
                    plans.append((f"{len(names)} adapters, uniform random", [names[rnd.randrange(len(names))] for _ in range(n)]))
                for label, plan in plans:
                    result["rows"].append(run(engine, label, prompts, plan, args.gen, **meta))
                    save()
                result["rows"].append(run(engine, "RAG-shaped, 5 adapters", rag, [names[i % 5] for i in range(len(rag))],
                                          args.gen, **meta))
            save()
        finally:
            engine.shutdown()
    base = {r["label"].split(",")[0]: r["out_tok_s"] for r in result["rows"] if r["phase"] == "base"}
    for r in result["rows"]:
        ref = base.get("RAG-shaped" if r["label"].startswith("RAG") else "base (LoRA disabled)")
        r["ratio_to_base"] = round(r["out_tok_s"] / ref, 3) if ref else None
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
