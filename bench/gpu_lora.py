"""Multi-LoRA serving cost on one GPU, through the project's own Engine (vLLM AsyncLLM).

One engine per configuration, the same fixed workload each time (random token prompts, fixed output
length with ignore_eos, dummy weights of a Llama-3-8B-shaped model, random adapters of --rank (8, the
shipped adapters' rank) on every projection). Rows: LoRA disabled; LoRA enabled with no adapter in
requests; 1 adapter; 5 adapters (round-robin); 16; 100 (uniform random over max_cpu_loras = 100, so
adapters swap in and out of the GPU slots); and a RAG-shaped workload (1,500-token prompts that share a system prompt,
prefix caching on) without LoRA and with 5 adapters. Reported: output tokens/s (median of --repeat batches, each on
prompts of its own so that no batch finds another's prefill in the prefix cache), time to first token
p50/p99, GPU memory.

A phase is `base` or `lora[N][s][+option...]`: N = max_loras, s = CUDA graphs specialised per number of
active adapters, options `dual` (VLLM_LORA_ENABLE_DUAL_STREAM: LoRA kernels on a second CUDA stream,
overlapping the base GEMM), `tuned` (VLLM_TUNED_CONFIG_FOLDER=--tuned-configs, written by
bench/lora_kernels.py --tune), `attn` (adapters on q/k/v/o only, and the engine's LoRA restricted to
qkv_proj/o_proj with lora_target_modules), `seg` (ASSISTANT_SEGMENTED_LORA=1: the project's segmented
LoRA shrink and expand kernels, assistant/serving/segmented_lora.py, through the project's vLLM plugin), `segx`
(the segmented expand only). --profile adds a torch-profiler capture of decode steps per phase (256 requests,
5 adapters) and sums GPU kernel time by kind. Every LoRA phase also answers a fixed prompt set greedily
(--greedy prompts, 5 adapters, 32 tokens) and the summary compares its tokens with the first LoRA phase's
(vLLM's own kernels when that phase has no seg option).

A watchdog writes py-spy stack dumps of every process of the run when an engine has not started after
--watchdog seconds (how the LoRA start-up hang of vLLM 0.26 was found; see README, GPU section).

usage (GPU host): python -m bench.gpu_lora --out DIR [--phases base,lora] [--requests 1024]
       CPU smoke test of the script itself: python -m bench.gpu_lora --cpu-smoke --out /tmp/gl
"""
from __future__ import annotations

import argparse
import contextlib
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
from unittest import mock

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


def build_adapters(root: Path, cfg: dict, n: int, rank: int, dtype: str = "bfloat16",
                   modules: tuple[str, ...] = MODULES) -> list[Path]:
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
            if name not in modules:
                continue
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
            peft_type="LORA", r=rank, lora_alpha=2 * rank, target_modules=list(modules), bias="none",
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


ROWS = ("none", "1", "5", "16", "100", "rag")


def parse_phase(phase: str, default_max_loras: int) -> dict:
    """`base` or `lora[N][s][+dual][+tuned][+attn][+seg|+segx][+rows=5.100]` -> settings of one engine (docstring);
    rows= picks this phase's workloads (default: --rows)."""
    name, *options = phase.split("+")
    rows = [o[5:].split(".") for o in options if o.startswith("rows=")]
    options = [o for o in options if not o.startswith("rows=")]
    unknown = set(options) - {"dual", "tuned", "attn", "seg", "segx"}
    if unknown or not (name == "base" or name.startswith("lora")) or (rows and set(rows[0]) - set(ROWS)):
        raise SystemExit(f"unknown phase {phase!r}: base or lora[N][s][+dual][+tuned][+attn][+seg|+segx][+rows=...]")
    lora = name != "base"
    spec = name[4:] if lora else ""
    digits = spec.rstrip("s")
    if digits and not digits.isdigit():
        raise SystemExit(f"unknown phase {phase!r}")
    return dict(phase=phase, lora=lora, max_loras=(int(digits) if digits else default_max_loras) if lora else None,
                specialize_active_lora=spec.endswith("s"), dual_stream="dual" in options,
                tuned_configs="tuned" in options, attention_only="attn" in options,
                segmented=("1" if "seg" in options else "expand" if "segx" in options else None),
                rows=rows[0] if rows else None)


def phase_env(spec: dict, args) -> dict[str, str | None]:
    """Environment of the engine process for this phase (the engine core reads vLLM's env at start)."""
    env = {"VLLM_LORA_ENABLE_DUAL_STREAM": "1" if spec["dual_stream"] else None,
           "VLLM_TUNED_CONFIG_FOLDER": str(args.tuned_configs) if spec["tuned_configs"] else None,
           # with this set the Engine also turns vLLM's compile cache off (an earlier phase's graph calls vLLM's ops)
           "ASSISTANT_SEGMENTED_LORA": spec["segmented"]}
    if spec["tuned_configs"] and not (args.tuned_configs and any(Path(args.tuned_configs).glob("*.json"))):
        raise RuntimeError(f"phase {spec['phase']} needs --tuned-configs DIR (bench/lora_kernels.py --tune writes it)")
    return env


@contextlib.contextmanager
def patched_environment(env: dict[str, str | None]):
    """os.environ with `env` applied (None = unset) inside the block, restored after it."""
    with mock.patch.dict(os.environ):
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield


def make_engine(model: Path, args, spec: dict):
    from assistant.config import Settings
    from assistant.serving.engine import Engine

    max_loras = spec["max_loras"] or 1
    settings = Settings(max_model_len=args.max_model_len, max_loras=max_loras, max_lora_rank=args.rank,
                        max_cpu_loras=max(args.adapters, max_loras), max_num_seqs=args.max_num_seqs,
                        enforce_eager=args.eager, gpu_memory_utilization=args.gpu_util, kv_cache_gib=2)
    engine_args = {"load_format": "dummy", "skip_tokenizer_init": True}
    if spec["specialize_active_lora"]:
        engine_args["specialize_active_lora"] = True
    if spec["attention_only"]:
        # without this vLLM wraps all seven projections and runs the LoRA kernels on zero weights for the
        # four the adapters lack (run 3's profile: same kernel time as full adapters)
        engine_args["lora_target_modules"] = ["qkv_proj", "o_proj"]
    if args.profile:
        from vllm.config import ProfilerConfig

        engine_args["profiler_config"] = ProfilerConfig(
            profiler="torch", torch_profiler_dir=str(profile_dir(args, spec)), torch_profiler_with_stack=False,
            ignore_frontend=True, delay_iterations=args.profile_delay, max_iterations=args.profile_steps)
    started = time.perf_counter()
    with Watchdog(args.out, spec["phase"], args.watchdog):
        engine = Engine(model, settings, dtype=args.dtype, enable_lora=spec["lora"], engine_args=engine_args)
    return engine, round(time.perf_counter() - started, 1)


def profile_dir(args, spec: dict) -> Path:
    safe = spec["phase"].replace("+", "_")
    return (args.workdir / "profiles" / safe).resolve()


def kernel_kind(name: str) -> str:
    low = name.lower()
    if "lora_shrink" in low:
        return "lora_shrink"
    if "lora_expand" in low:
        return "lora_expand"
    if any(k in low for k in ("flash", "fmha", "attention", "attn")):
        return "attention"
    if any(k in low for k in ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas", "matmul")):
        return "gemm"
    if any(k in low for k in ("memset", "fill", "zero")):
        return "fill"
    return "other"


def summarise_trace(folder: Path, steps: int) -> dict | None:
    """GPU kernel time by kind (and the 15 biggest kernels) from the torch profiler's Chrome traces."""
    import gzip

    files = sorted(folder.glob("*.pt.trace.json*"))
    if not files:
        return None
    kinds: dict[str, float] = {}
    kernels: dict[str, list[float]] = {}
    first, last = float("inf"), 0.0
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            trace = json.load(fh)
        for ev in trace.get("traceEvents", []):
            if ev.get("cat") != "kernel" or "dur" not in ev:
                continue
            first, last = min(first, ev["ts"]), max(last, ev["ts"] + ev["dur"])
            kind = kernel_kind(ev["name"])
            kinds[kind] = kinds.get(kind, 0.0) + ev["dur"]
            kernels.setdefault(ev["name"], []).append(ev["dur"])
    total = sum(kinds.values())
    top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:15]
    span = max(last - first, 0.0)
    # span: first kernel start to last kernel end, i.e. the wall time of the profiled steps on the GPU
    # (with dual-stream LoRA the kernel sum exceeds it: kernels overlap)
    return {"trace_files": [f.name for f in files], "profiled_steps": steps, "gpu_kernel_ms": round(total / 1000, 2),
            "span_ms": round(span / 1000, 2), "step_ms": round(span / 1000 / steps, 2) if steps else None,
            "by_kind_ms": {k: round(v / 1000, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "by_kind_share": ({k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
                              if total else {}),
            "top_kernels": [{"name": n[:160], "calls": len(d), "ms": round(sum(d) / 1000, 2)} for n, d in top]}


def profile_run(engine, args, spec: dict, prompts, adapters) -> dict | None:
    """Decode steps under the torch profiler: the worker starts it after --profile-delay steps (the
    prefill of these 256 requests), keeps it for --profile-steps steps, then writes the trace."""
    from assistant.serving.engine import GenerationRequest

    folder = profile_dir(args, spec)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    requests = [GenerationRequest(prompt_token_ids=p, adapter=a, max_tokens=args.gen, ignore_eos=True)
                for p, a in zip(prompts[:256], adapters[:256])]
    engine.start_profile()
    engine.generate(requests)
    engine.stop_profile()
    deadline = time.time() + 120
    while time.time() < deadline and not list(folder.glob("*.pt.trace.json*")):
        time.sleep(2)
    time.sleep(3)  # let the writer finish the file
    return summarise_trace(folder, args.profile_steps)


def run(engine, label: str, prompt_sets, adapters: list[str | None], gen: int, *, repeat: int = 1,
        warmup: int = 256, **meta) -> dict:
    """Output tokens/s of one workload: `repeat` measured batches, each on fresh prompts (prompt_sets(i)),
    median reported; TTFT percentiles of the median batch."""
    from assistant.serving.engine import GenerationRequest

    def requests(ps, ads, tokens=gen):
        return [GenerationRequest(prompt_token_ids=p, adapter=a, max_tokens=tokens, ignore_eos=True)
                for p, a in zip(ps, ads)]

    batches = []
    for i in range(repeat):
        prompts = prompt_sets(i)
        if i == 0:
            # warm-up: a full batch (load the adapters; let Triton build its kernels for the prefill chunk
            # and decode shapes the engine runs outside its CUDA graphs) on reversed prompts, so that
            # nothing of it is in the prefix cache when the measured prompts come
            engine.generate(requests([p[::-1] for p in prompts[:warmup]], adapters[:warmup], tokens=8))
        started = time.perf_counter()
        results = engine.generate(requests(prompts, adapters))
        wall = time.perf_counter() - started
        out_tokens = sum(len(r.token_ids) for r in results)
        batches.append((out_tokens / wall, wall, out_tokens, sorted(r.first_token_s for r in results), len(prompts[0])))
    rates = [b[0] for b in batches]
    rate, wall, out_tokens, ttft, prompt_len = sorted(batches, key=lambda b: b[0])[(len(batches) - 1) // 2]
    row = dict(label=label, requests=len(adapters), prompt_tokens=prompt_len, out_tokens=out_tokens,
               seconds=round(wall, 2), out_tok_s=round(statistics.median(rates), 1),
               out_tok_s_runs=[round(r, 1) for r in rates],
               ttft_p50_ms=round(statistics.median(ttft) * 1000, 1),
               ttft_p99_ms=round(ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))] * 1000, 1),
               gpu_mem_mib=gpu_memory_mib(), distinct_adapters=len({a for a in adapters if a})) | meta
    print(json.dumps(row), flush=True)
    return row


def greedy_tokens(engine, prompts: list[list[int]], adapters: list[str]) -> list[list[int]]:
    """Greedy output tokens of a fixed prompt set (adapters round-robin), for the kernel parity check."""
    from assistant.serving.engine import GenerationRequest

    results = engine.generate([GenerationRequest(prompt_token_ids=p, adapter=adapters[i % len(adapters)],
                                                 max_tokens=32, ignore_eos=True) for i, p in enumerate(prompts)])
    return [list(r.token_ids) for r in results]


def greedy_parity(greedy: dict[str, list[list[int]]]) -> dict:
    """Each LoRA phase's greedy tokens against the first phase's: identical sequences, and the mean number
    of leading tokens that agree (a bf16 rounding difference can flip a near-tie and everything after it)."""
    if not greedy:
        return {}
    reference, ref_tokens = next(iter(greedy.items()))
    rows = {}
    for phase, tokens in greedy.items():
        prefixes = []
        for a, b in zip(tokens, ref_tokens):
            same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            prefixes.append(same)
        rows[phase] = dict(identical=sum(a == b for a, b in zip(tokens, ref_tokens)), prompts=len(tokens),
                           mean_agreeing_prefix=round(statistics.mean(prefixes), 2) if prefixes else None,
                           tokens=len(tokens[0]) if tokens else 0)
    return {"reference": reference, "phases": rows, "tokens": greedy}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--phases", default="base,lora",
                    help="comma-separated: base, lora[N][s][+dual][+tuned][+attn][+seg][+rows=5.100]")
    ap.add_argument("--rows", default=",".join(ROWS), help="workloads of the LoRA phases: " + ",".join(ROWS))
    ap.add_argument("--requests", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="measured batches per workload (median reported)")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--rag-requests", type=int, default=512)
    ap.add_argument("--rag-prompt", type=int, default=1500)
    ap.add_argument("--rag-shared", type=int, default=300, help="tokens of the shared system prompt")
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--rank", type=int, default=8, help="adapter rank = max_lora_rank (shipped adapters: 8)")
    ap.add_argument("--max-loras", type=int, default=16)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--gpu-util", type=float, default=0.85)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs / torch.compile")
    ap.add_argument("--tuned-configs", type=Path, help="folder of tuned LoRA kernel configs (phases with +tuned)")
    ap.add_argument("--profile", action="store_true", help="torch-profile decode steps in every phase")
    ap.add_argument("--profile-delay", type=int, default=40, help="engine steps before the profiler starts")
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument("--greedy", type=int, default=64, help="fixed prompts answered greedily per LoRA phase (0: off)")
    ap.add_argument("--watchdog", type=float, default=240.0, help="py-spy dumps after N s of start-up (0 = off)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gpu_lora"))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model, few requests: checks the script on CPU")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in args.rows.split(",") if r]
    if set(rows) - set(ROWS):
        raise SystemExit(f"unknown rows {set(rows) - set(ROWS)}; choose from {ROWS}")
    cfg = LLAMA_8B
    if args.cpu_smoke:
        cfg = TINY
        args.requests, args.prompt, args.gen, args.adapters, args.rank = 24, 32, 8, 6, 8
        args.rag_requests, args.rag_prompt, args.rag_shared = 8, 128, 32
        args.max_loras, args.max_num_seqs, args.max_model_len, args.dtype, args.eager = 4, 32, 512, "float32", True
    specs = [parse_phase(p.strip(), args.max_loras) for p in args.phases.split(",") if p.strip()]
    model = build_model(args.workdir / "model", cfg)
    t = time.perf_counter()
    dtype = "float32" if args.cpu_smoke else "bfloat16"
    paths = build_adapters(args.workdir / "adapters", cfg, args.adapters, args.rank, dtype)
    attn_paths = (build_adapters(args.workdir / "adapters-attn", cfg, args.adapters, args.rank, dtype, MODULES[:4])
                  if any(s["attention_only"] for s in specs) else [])
    adapters_s = round(time.perf_counter() - t, 1)
    vocab = cfg["vocab_size"]

    def prompt_set(seed: str, count: int, length: int) -> list[list[int]]:
        """Random token prompts of their own per workload: prefix caching is on, and a workload that
        re-sent an earlier one's prompts (with the same adapter) would skip part of its prefill."""
        r = random.Random(seed)
        return [[r.randrange(1000, vocab - 1) for _ in range(length)] for _ in range(count)]

    rnd = random.Random(0)
    shared = [rnd.randrange(1000, vocab - 1) for _ in range(args.rag_shared)]

    def rag(i: int) -> list[list[int]]:
        return [shared + p for p in prompt_set(f"rag-{i}", args.rag_requests, args.rag_prompt - args.rag_shared)]

    def prompts(key: str):
        return lambda i: prompt_set(f"{key}-{i}", args.requests, args.prompt)

    names = [f"a{i}" for i in range(len(paths))]
    n = args.requests
    uniform = [names[rnd.randrange(len(names))] for _ in range(n)]
    plans = {"none": ("LoRA enabled, no adapter in requests", [None] * n),
             "1": ("1 adapter", [names[0]] * n),
             "5": ("5 adapters, round-robin", [names[i % 5] for i in range(n)]),
             "16": (f"{min(16, len(names))} adapters, round-robin", [names[i % min(16, len(names))] for i in range(n)]),
             "100": (f"{len(names)} adapters, uniform random", uniform)}
    result = {"benchmark": "gpu_lora",
              "model": "Llama-3-8B-shaped, dummy weights" if not args.cpu_smoke else "tiny llama (CPU smoke)",
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "adapters_written_s": adapters_s, "gpu": None, "vllm": None, "engines": [], "rows": [], "profiles": {},
              "greedy": {}}
    greedy_prompts = prompt_set("greedy", args.greedy, 64)
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

    for spec in specs:
        try:
            with patched_environment(phase_env(spec, args)):
                engine, startup = make_engine(model, args, spec)
        except Exception as exc:  # one configuration that cannot start must not cost the others
            print(f"phase {spec['phase']}: engine failed to start: {exc!r}", flush=True)
            result["engines"].append(spec | {"error": repr(exc)[:2000]})
            save()
            continue
        result["engines"].append(spec | {"startup_s": startup, "gpu_mem_mib_idle": gpu_memory_mib(),
                                         "flashinfer_sampler": os.environ.get("VLLM_USE_FLASHINFER_SAMPLER", "1")})
        save()
        meta = {k: spec[k] for k in ("phase", "max_loras", "specialize_active_lora", "dual_stream", "tuned_configs",
                                     "attention_only", "segmented")}
        try:
            if not spec["lora"]:
                result["rows"].append(run(engine, "base (LoRA disabled)", prompts("base"), [None] * n, args.gen,
                                          repeat=args.repeat, **meta))
                save()
                result["rows"].append(run(engine, "RAG-shaped, base (LoRA disabled)", rag, [None] * args.rag_requests,
                                          args.gen, repeat=args.repeat, **meta))
                profiled = [None] * n
            else:
                chosen = attn_paths if spec["attention_only"] else paths
                for name, path_ in zip(names, chosen):
                    engine.register_adapter(name, path_, version="v1")
                for key in spec["rows"] or rows:
                    if key == "rag":
                        result["rows"].append(run(engine, "RAG-shaped, 5 adapters", rag,
                                                  [names[i % 5] for i in range(args.rag_requests)], args.gen,
                                                  repeat=args.repeat, **meta))
                    elif key in ("16", "100") and spec["max_loras"] < 16:
                        continue
                    else:
                        label, plan = plans[key]
                        result["rows"].append(run(engine, label, prompts(key), plan, args.gen, repeat=args.repeat,
                                                  **meta))
                    save()
                profiled = plans["5"][1]
                if args.greedy:
                    result["greedy"][spec["phase"]] = greedy_tokens(engine, greedy_prompts, names[:5])
            if args.profile:
                result["profiles"][spec["phase"]] = profile_run(engine, args, spec, prompts("profile")(0), profiled)
                summary = {"profile": spec["phase"]} | (result["profiles"][spec["phase"]] or {})
                print(json.dumps(summary)[:1500], flush=True)
            save()
        except Exception as exc:
            print(f"phase {spec['phase']}: failed: {exc!r}", flush=True)
            result["engines"][-1]["error"] = repr(exc)[:2000]
            save()
        finally:
            engine.shutdown()
    base = {r["label"].split(",")[0]: r["out_tok_s"] for r in result["rows"] if r["phase"] == "base"}
    for r in result["rows"]:
        ref = base.get("RAG-shaped" if r["label"].startswith("RAG") else "base (LoRA disabled)")
        r["ratio_to_base"] = round(r["out_tok_s"] / ref, 3) if ref else None
    result["greedy_parity"] = greedy_parity(result.pop("greedy"))
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
