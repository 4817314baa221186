"""A segmented LoRA expand kernel for vLLM's GPU punica path (opt-in: ASSISTANT_SEGMENTED_LORA=1).

Why: the H200 profile (README, GPU section) puts most of the multi-LoRA cost in vLLM 0.26's
`lora_expand` Triton kernel. Its grid is (M blocks x N blocks) x slices x LoRA slots: every slot
(max_loras + 1 of them, or the active count with `specialize_active_lora`) gets a program for every
block of the WHOLE batch, and the programs past the slot's own token count exit at once. With 5
adapters sharing a 2,048-token chunk, each slot has ~410 tokens, so ~94% of the programs launched for
max_loras 16 do nothing; with max_loras 100 it is ~99%. vLLM's own source marks this ("maximizes
parallelization at the cost of wasteful thread block launch").

This kernel launches programs over the tiles of each slot's own segment of the token list sorted by
slot (the SGMV idea of Punica, Chen et al. 2023): at most cdiv(M, BLOCK_M) + slots tiles per N block,
each program finding its slot from the per-slot token counts vLLM already keeps on the GPU (one vector
load and a cumsum). It takes the same arguments as vLLM's `lora_expand` (the metadata of
`LoRAKernelMeta.meta_args`), so it can replace it in `vllm.lora.punica_wrapper.punica_gpu` (see
`install`). `segmented=False` runs vLLM's grid with the same inner loop, which is how
bench/lora_expand_grid.py isolates the effect of the grid.

Written for this project after vLLM's `_lora_expand_kernel` (Apache-2.0, vLLM contributors): same
inputs and semantics, different grid; accumulation and the add to the output are in float32.
"""

import logging
import os

logger = logging.getLogger(__name__)

ENV_FLAG = "ASSISTANT_SEGMENTED_LORA"

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs without Triton: the kernel is simply unavailable
    triton = tl = None

if triton is not None:

    @triton.jit
    def _tile(pid_t, lora_ids_ptr, tokens_per_slot_ptr, num_slots, BLOCK_M: tl.constexpr, SEGMENTED: tl.constexpr,
              SLOTS_P2: tl.constexpr):
        """(slot, first row within the slot's segment) of tile pid_t."""
        if SEGMENTED:
            # tile pid_t of the concatenated per-slot segments, each padded to BLOCK_M rows: the slot is
            # found from all slots' tile counts at once (one vector load, a cumsum), not a serial scan
            offs = tl.arange(0, SLOTS_P2)
            ok = offs < num_slots
            lid = tl.load(lora_ids_ptr + offs, mask=ok, other=-1)
            cnt = tl.load(tokens_per_slot_ptr + offs, mask=ok, other=0)
            tiles = tl.where(lid == -1, 0, tl.cdiv(cnt, BLOCK_M))
            ends = tl.cumsum(tiles, 0)
            slot = tl.sum((ends <= pid_t).to(tl.int32), 0)
            first = tl.sum(tl.where(offs < slot, tiles, 0), 0)
            m_off = (pid_t - first) * BLOCK_M
        else:
            # vLLM's grid: one program per (slot, block of the whole batch)
            slot = tl.program_id(2)
            m_off = pid_t * BLOCK_M
        return slot, m_off

    @triton.jit
    def _segment_rows(sorted_tokens_ptr, slot_start_ptr, slot, m_off, count, BLOCK_M: tl.constexpr):
        """The token rows of this tile (indices into the batch) and which of its BLOCK_M rows are real."""
        start = tl.load(slot_start_ptr + slot)
        offs_m = tl.arange(0, BLOCK_M)
        row_ok = offs_m < count - m_off
        rows = tl.load(sorted_tokens_ptr + start + m_off + offs_m, mask=row_ok, other=0)
        return rows, row_ok

    @triton.jit
    def _rows_times_weight(x_ptr, w_ptr, rows, row_ok, lora_id, offs_n, col_ok, K, k_first, k_step,
                           x_stride_m, x_stride_k, w_stride_l, w_stride_n, w_stride_k,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """float32 x[rows] @ w[lora_id].T over the BLOCK_K slabs k_first, k_first + k_step, ... of K."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_first, K, k_step):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            a = tl.load(x_ptr + rows[:, None] * x_stride_m + offs_k[None, :] * x_stride_k,
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_ptr + lora_id * w_stride_l + offs_n[None, :] * w_stride_n + offs_k[:, None] * w_stride_k,
                        mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc += tl.dot(a.to(b.dtype), b)
        return acc

    @triton.jit
    def _expand_kernel(x_ptr, w_ptr, out_ptr, sorted_tokens_ptr, tokens_per_slot_ptr, slot_start_ptr,
                       lora_ids_ptr, num_slots, N, K,
                       x_stride_m, x_stride_k, w_stride_l, w_stride_n, w_stride_k, out_stride_m, out_col0,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       ADD_INPUTS: tl.constexpr, SEGMENTED: tl.constexpr, SLOTS_P2: tl.constexpr):
        pid_n = tl.program_id(1)
        slot, m_off = _tile(tl.program_id(0), lora_ids_ptr, tokens_per_slot_ptr, num_slots, BLOCK_M, SEGMENTED,
                            SLOTS_P2)
        if slot >= num_slots:
            return
        lora_id = tl.load(lora_ids_ptr + slot)
        count = tl.load(tokens_per_slot_ptr + slot)
        if (lora_id == -1) | (m_off >= count):
            return
        rows, row_ok = _segment_rows(sorted_tokens_ptr, slot_start_ptr, slot, m_off, count, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = offs_n < N
        acc = _rows_times_weight(x_ptr, w_ptr, rows, row_ok, lora_id, offs_n, col_ok, K, 0, BLOCK_K,
                                 x_stride_m, x_stride_k, w_stride_l, w_stride_n, w_stride_k, BLOCK_M, BLOCK_N, BLOCK_K)
        out = out_ptr + rows[:, None] * out_stride_m + (out_col0 + offs_n)[None, :]
        mask = row_ok[:, None] & col_ok[None, :]
        if ADD_INPUTS:
            acc += tl.load(out, mask=mask, other=0.0).to(tl.float32)
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _shrink_kernel(x_ptr, w_ptr, out_ptr, sorted_tokens_ptr, tokens_per_slot_ptr, slot_start_ptr,
                       lora_ids_ptr, num_slots, N, K, scaling,
                       x_stride_m, x_stride_k, w_stride_l, w_stride_n, w_stride_k, out_stride_m, out_stride_n,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                       SEGMENTED: tl.constexpr, SLOTS_P2: tl.constexpr):
        # axis 0: tile x SPLIT_K (each program sums every SPLIT_K-th BLOCK_K slab of the hidden size);
        # the output is the float32 buffer the expand reads, zeroed by the caller when SPLIT_K > 1
        pid = tl.program_id(0)
        pid_k = pid % SPLIT_K
        pid_n = tl.program_id(1)
        slot, m_off = _tile(pid // SPLIT_K, lora_ids_ptr, tokens_per_slot_ptr, num_slots, BLOCK_M, SEGMENTED,
                            SLOTS_P2)
        if slot >= num_slots:
            return
        lora_id = tl.load(lora_ids_ptr + slot)
        count = tl.load(tokens_per_slot_ptr + slot)
        if (lora_id == -1) | (m_off >= count):
            return
        rows, row_ok = _segment_rows(sorted_tokens_ptr, slot_start_ptr, slot, m_off, count, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = offs_n < N
        acc = _rows_times_weight(x_ptr, w_ptr, rows, row_ok, lora_id, offs_n, col_ok, K, pid_k * BLOCK_K,
                                 BLOCK_K * SPLIT_K, x_stride_m, x_stride_k, w_stride_l, w_stride_n, w_stride_k,
                                 BLOCK_M, BLOCK_N, BLOCK_K)
        acc *= scaling
        out = out_ptr + rows[:, None] * out_stride_m + offs_n[None, :] * out_stride_n
        mask = row_ok[:, None] & col_ok[None, :]
        if SPLIT_K == 1:
            tl.store(out, acc, mask=mask)
        else:
            tl.atomic_add(out, acc, mask=mask)


def token_metadata(mapping, max_loras: int) -> tuple:
    """The metadata vLLM's LoRAKernelMeta.prepare_tensors builds from a token -> slot mapping (-1: no
    adapter), for tests and benchmarks: (sorted token indices, tokens per slot, segment starts, slot ids)."""
    import torch

    dev = mapping.device
    ids, counts = torch.unique(mapping, sorted=True, return_counts=True)
    lora_ids = torch.full((max_loras + 1,), -1, dtype=torch.int32, device=dev)
    lora_ids[: len(ids)] = ids
    per_slot = torch.zeros(max_loras + 1, dtype=torch.int32, device=dev)
    per_slot[: len(ids)] = counts
    starts = torch.zeros(max_loras + 2, dtype=torch.int32, device=dev)
    starts[1: 1 + len(ids)] = torch.cumsum(counts, 0)
    order = torch.sort(mapping, stable=True)[1].to(torch.int32)
    return order, per_slot, starts, lora_ids


def reference_expand(inputs, lora_b_weights, output, mapping, offset_start: int = 0, add_inputs: bool = False):
    """What lora_expand computes, in float32 PyTorch, for tests and benchmarks: the slice columns of tokens
    with a slot get inputs @ lora_b.T (added to the output with add_inputs); tokens with slot -1 and the
    columns outside the slices keep their values. Returns a new float32 tensor."""
    import torch

    ref = output.float().clone()
    rows = mapping >= 0
    slots = mapping[rows].long()
    column = offset_start
    for s, weight in enumerate(lora_b_weights):
        n = weight.shape[-2]
        w = weight.reshape(weight.shape[0], n, -1).float()
        delta = torch.einsum("mr,mnr->mn", inputs[s][rows].float(), w[slots])
        ref[rows, column:column + n] = delta + (ref[rows, column:column + n] if add_inputs else 0)
        column += n
    return ref


def reference_shrink(inputs, lora_a_weights, mapping, scaling: float):
    """What lora_shrink computes, in float32 PyTorch: one [M, rank] buffer per slice holding
    scaling * inputs @ lora_a[slot of each token].T, zero for tokens with slot -1. Returns [slices, M, rank]."""
    import torch

    rows = mapping >= 0
    slots = mapping[rows].long()
    out = torch.zeros(len(lora_a_weights), inputs.shape[0], lora_a_weights[0].shape[-2], dtype=torch.float32,
                      device=inputs.device)
    x = inputs[rows].float()
    for s, weight in enumerate(lora_a_weights):
        w = weight.reshape(weight.shape[0], weight.shape[-2], -1).float()
        out[s, rows] = scaling * torch.einsum("mk,mrk->mr", x, w[slots])
    return out


def shrink_config(m: int) -> dict:
    """vLLM 0.26's default shrink tiles (a 16-wide rank tile; the hidden size split over SPLIT_K programs, far
    more at decode, where the token tiles are few)."""
    small = m < 128
    return dict(block_m=32, block_n=16, block_k=256 if small else 32, split_k=64 if small else 8, num_warps=4,
                num_stages=2)


def default_config(m: int, n: int) -> dict:
    """Tile sizes by tokens per step, from the H200 search (bench/results/lora_expand_grid_h200.json):
    32 x 128 at decode batch 256 and for most of a 2,048-token chunk, 64 rows for gate_up's wide output."""
    block_m = 16 if m <= 64 else 64 if m > 512 and n >= 8192 else 32
    return dict(block_m=block_m, block_n=128, block_k=16, num_warps=4, num_stages=2)


def lora_expand(inputs, lora_b_weights, output_tensor, token_lora_mapping, token_indices_sorted_by_lora_ids,
                num_tokens_per_lora, lora_token_start_loc, lora_ids, no_lora_flag_cpu, num_active_loras,
                offset_start: int = 0, add_inputs: bool = False, *, segmented: bool = True,
                config: dict | None = None) -> None:
    """output[:, offset_start + slice columns] (+)= inputs[slice] @ lora_b[slot of each token].T, per slice.

    Same arguments as vLLM's `lora_expand`: inputs [slices, M, rank] (float32 buffer of the shrink op),
    lora_b_weights one [max_loras, (1,) N_slice, rank] tensor per slice, output [M, columns], and the
    kernel metadata of LoRAKernelMeta (token indices sorted by slot, tokens per slot, segment starts,
    slot ids with -1 for "no adapter", a CPU flag for "no adapter anywhere", and a CPU count of slots
    to scan, which vLLM sets to max_loras + 1 or the active count)."""
    if bool(no_lora_flag_cpu.item()):
        return
    m = inputs.size(1)
    slots = int(num_active_loras.item())  # a CPU tensor: no device sync
    column = offset_start
    for s, weight in enumerate(lora_b_weights):
        n, k = weight.shape[-2], weight.shape[-1]
        cfg = config or default_config(m, n)
        m_tiles = triton.cdiv(m, cfg["block_m"])
        n_tiles = triton.cdiv(n, cfg["block_n"])
        grid = (m_tiles + slots, n_tiles, 1) if segmented else (m_tiles, n_tiles, slots)
        x = inputs[s]
        _expand_kernel[grid](
            x, weight, output_tensor, token_indices_sorted_by_lora_ids, num_tokens_per_lora, lora_token_start_loc,
            lora_ids, slots, n, k, x.stride(0), x.stride(1), weight.stride(0), weight.stride(-2), weight.stride(-1),
            output_tensor.stride(0), column,
            BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], ADD_INPUTS=add_inputs,
            SEGMENTED=segmented, SLOTS_P2=max(16, triton.next_power_of_2(slots)), num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])
        column += n


def lora_shrink(inputs, lora_a_weights, output_tensor, token_lora_mapping, token_indices_sorted_by_lora_ids,
                num_tokens_per_lora, lora_token_start_loc, lora_ids, no_lora_flag_cpu, num_active_loras,
                scaling: float, *, segmented: bool = True, config: dict | None = None) -> None:
    """output[slice] = scaling * inputs @ lora_a[slice][slot of each token].T (zero for tokens without adapter).

    Same arguments as vLLM's `lora_shrink`: inputs [M, hidden], lora_a_weights one [max_loras, (1,) rank,
    hidden] tensor per slice, output the float32 [slices, M, rank] buffer the expand reads, then the kernel
    metadata as in `lora_expand` and the LoRA scaling."""
    if bool(no_lora_flag_cpu.item()):
        return
    output_tensor.zero_()  # as vLLM: tokens without adapter read zeros, split-K programs add into it
    m = inputs.size(0)
    slots = int(num_active_loras.item())
    cfg = config or shrink_config(m)
    m_tiles = triton.cdiv(m, cfg["block_m"])
    for s, weight in enumerate(lora_a_weights):
        n, k = weight.shape[-2], weight.shape[-1]
        n_tiles = triton.cdiv(n, cfg["block_n"])
        grid = ((m_tiles + slots) * cfg["split_k"], n_tiles, 1) if segmented else \
            (m_tiles * cfg["split_k"], n_tiles, slots)
        out = output_tensor[s]
        _shrink_kernel[grid](
            inputs, weight, out, token_indices_sorted_by_lora_ids, num_tokens_per_lora, lora_token_start_loc,
            lora_ids, slots, n, k, scaling, inputs.stride(0), inputs.stride(1), weight.stride(0),
            weight.stride(-2), weight.stride(-1), out.stride(0), out.stride(1),
            BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], SPLIT_K=cfg["split_k"],
            SEGMENTED=segmented, SLOTS_P2=max(16, triton.next_power_of_2(slots)), num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])


def selected_kernels() -> set[str]:
    """Which vLLM LoRA ops ASSISTANT_SEGMENTED_LORA replaces: "1" or "all" both, "expand" or "shrink" one
    (comma-separated also works); unset or "0" none."""
    value = os.environ.get(ENV_FLAG, "0").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return set()
    if value in ("1", "all", "true", "yes", "on"):
        return {"expand", "shrink"}
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    unknown = chosen - {"expand", "shrink"}
    if unknown:
        logger.warning("%s: unknown kernel(s) %s ignored (use 1, expand or shrink)", ENV_FLAG, sorted(unknown))
    return chosen & {"expand", "shrink"}


def install() -> set[str]:
    """Route vLLM's GPU punica wrapper to the segmented kernels (registered custom ops, so that
    torch.compile keeps them opaque like vLLM's own; an op's schema is read from the annotations below,
    so this module must not use `from __future__ import annotations`). Called by the project's vLLM
    plugin in every vLLM process; does nothing unless ASSISTANT_SEGMENTED_LORA asks for it on a CUDA
    machine. Returns the ops it replaced."""
    chosen = selected_kernels()
    if not chosen:
        return set()
    import torch

    if triton is None or not torch.cuda.is_available():
        logger.warning("%s ignored: the segmented LoRA kernels need CUDA and Triton", ENV_FLAG)
        return set()
    from vllm.logger import init_logger
    from vllm.lora.punica_wrapper import punica_gpu
    from vllm.utils.torch_utils import direct_register_custom_op

    missing = {name for name in chosen if not hasattr(punica_gpu, f"lora_{name}")}
    if missing:  # a vLLM whose GPU wrapper no longer calls them by these names
        logger.warning("%s ignored: vllm.lora.punica_wrapper.punica_gpu has no %s", ENV_FLAG, sorted(missing))
        return set()

    def expand_op(inputs: torch.Tensor, lora_b_weights: list[torch.Tensor], output_tensor: torch.Tensor,
                  token_lora_mapping: torch.Tensor, token_indices_sorted_by_lora_ids: torch.Tensor,
                  num_tokens_per_lora: torch.Tensor, lora_token_start_loc: torch.Tensor, lora_ids: torch.Tensor,
                  no_lora_flag_cpu: torch.Tensor, num_active_loras: torch.Tensor, offset_start: int = 0,
                  add_inputs: bool = False) -> None:
        lora_expand(inputs, lora_b_weights, output_tensor, token_lora_mapping, token_indices_sorted_by_lora_ids,
                    num_tokens_per_lora, lora_token_start_loc, lora_ids, no_lora_flag_cpu, num_active_loras,
                    offset_start, add_inputs)

    def shrink_op(inputs: torch.Tensor, lora_a_weights: list[torch.Tensor], output_tensor: torch.Tensor,
                  token_lora_mapping: torch.Tensor, token_indices_sorted_by_lora_ids: torch.Tensor,
                  num_tokens_per_lora: torch.Tensor, lora_token_start_loc: torch.Tensor, lora_ids: torch.Tensor,
                  no_lora_flag_cpu: torch.Tensor, num_active_loras: torch.Tensor, scaling: float) -> None:
        lora_shrink(inputs, lora_a_weights, output_tensor, token_lora_mapping, token_indices_sorted_by_lora_ids,
                    num_tokens_per_lora, lora_token_start_loc, lora_ids, no_lora_flag_cpu, num_active_loras,
                    scaling)

    ops = {"expand": expand_op, "shrink": shrink_op}
    for name in sorted(chosen):
        op_name = f"assistant_segmented_lora_{name}"
        if not hasattr(torch.ops.vllm, op_name):
            direct_register_custom_op(op_name=op_name, op_func=ops[name], mutates_args=["output_tensor"],
                                      fake_impl=_no_output)
        setattr(punica_gpu, f"lora_{name}", getattr(torch.ops.vllm, op_name))
    init_logger(__name__).info("LoRA %s: the project's segmented kernels (%s)", "+".join(sorted(chosen)), ENV_FLAG)
    return chosen


def _no_output(*args, **kwargs) -> None:
    """Fake implementation for torch.compile: the ops only write into their output argument."""
    return None
