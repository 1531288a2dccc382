"""Variable-length FlashAttention for padding-free packed batches, from PyTorch itself.

Packing puts several examples in one row with per-example position ids. SDPA then needs a dense
block-diagonal mask and computes attention across the whole row (a 4096-token pack costs 8x the
attention FLOPs of eight 512-token examples) with a kernel that can't use FlashAttention. PyTorch
ships FlashAttention's variable-length kernel as `torch.nn.attention.varlen.varlen_attn`: it takes
the packed row and the examples' boundaries and attends only within each example. We register it
with transformers' AttentionInterface as "varlen" (no flash-attn package to build), and use it
on CUDA when batches are packed. Anything that is not a packed row (generation, padded batches)
goes to SDPA unchanged.
"""

from __future__ import annotations

import inspect
import weakref

NAME = "varlen"
_registered: bool | None = None


def available() -> bool:
    try:
        import torch
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    major, _ = torch.cuda.get_device_capability()
    if major < 8:  # FlashAttention 2 kernels: Ampere and newer
        return False
    parameters = inspect.signature(varlen_attn).parameters
    return "is_causal" in parameters or "window_size" in parameters  # no causal option: not for a decoder


def _boundaries(position_ids):
    """(cu_seqlens int32, max_len) of the examples in a packed row; cached per position_ids tensor so the
    one host sync happens once per forward, not once per layer."""
    import torch

    cached = getattr(_boundaries, "cache", None)
    if cached is not None and cached[0]() is position_ids:
        return cached[1]
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0, as_tuple=True)[0]
    total = torch.tensor([flat.numel()], device=flat.device, dtype=starts.dtype)
    cu = torch.cat([starts, total]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max().item())
    result = (cu, max_len)
    _boundaries.cache = (weakref.ref(position_ids), result)
    return result


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             is_causal=None, **kwargs):
    import torch
    from torch.nn.attention.varlen import varlen_attn
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    packed = query.shape[0] == 1 and position_ids is not None and attention_mask is None and query.shape[2] > 1
    if not packed or getattr(module, "sliding_window", None) or dropout:
        mask = attention_mask
        if mask is not None and mask.dim() == 2:  # a padding mask: let SDPA build on it the usual way
            mask = None
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling,
                                      is_causal=True if mask is None else None, **kwargs)
    cu, max_len = _boundaries(position_ids)
    # (batch=1, heads, tokens, dim) -> (tokens, heads, dim)
    q = query[0].transpose(0, 1)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    options = _varlen_options(q.shape[1], k.shape[1])
    if options.pop("repeat_kv", False):
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    output = varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, max_len, max_len, scale=scaling,
                         **options)
    return output.unsqueeze(0), None  # (1, tokens, heads, dim), as transformers' attention functions return


_signature_cache: dict[str, bool] = {}


def _varlen_options(query_heads: int, kv_heads: int) -> dict:
    """Causal masking and GQA options, for the varlen_attn signature of the installed PyTorch."""
    if not _signature_cache:
        from torch.nn.attention.varlen import varlen_attn

        parameters = inspect.signature(varlen_attn).parameters
        _signature_cache["is_causal"] = "is_causal" in parameters
        _signature_cache["window_size"] = "window_size" in parameters
        _signature_cache["enable_gqa"] = "enable_gqa" in parameters
    options: dict = {}
    if _signature_cache["is_causal"]:
        options["is_causal"] = True
    elif _signature_cache["window_size"]:
        options["window_size"] = (-1, 0)
    if query_heads != kv_heads:
        if _signature_cache["enable_gqa"]:
            options["enable_gqa"] = True
        else:
            options["repeat_kv"] = True
    return options


def register() -> str | None:
    """Registers "varlen" with transformers; returns its name, or None where it can't run."""
    global _registered
    if _registered is None:
        _registered = available()
        if _registered:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

            AttentionInterface.register(NAME, varlen_attention_forward)
            # No dense mask: a packed row is described by its position ids (None when there is no padding).
            AttentionMaskInterface.register(NAME, flash_attention_mask)
    return NAME if _registered else None
