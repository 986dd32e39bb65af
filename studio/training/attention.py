"""Attention for padding-free batches where FlashAttention's varlen kernels are not installed.

A padding-free batch is one row of joined sequences; the collator passes where each starts
(``cu_seq_lens_q``). Plain SDPA can keep them apart only through the block-diagonal mask that
transformers builds from the restarting position ids: every layer then computes attention over the
whole joined row (N^2, the off-diagonal blocks thrown away), copies the grouped K/V heads, and
takes SDPA's masked path. ``sdpa_rows`` runs SDPA once per sequence instead, causal and unmasked:
the cost of each sequence alone, like FlashAttention varlen, on any device.

Any other batch (padded, or without ``cu_seq_lens_q``) goes to transformers' SDPA unchanged, with
the mask transformers built for it.
"""
from __future__ import annotations

from typing import Any

NAME = "sdpa_rows"


def sdpa_rows_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                        scaling: float | None = None, cu_seq_lens_q: Any = None, cu_seq_lens_k: Any = None,
                        **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    joined = (cu_seq_lens_q is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
              and (cu_seq_lens_k is None or torch.equal(cu_seq_lens_k, cu_seq_lens_q)))
    if not joined:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bounds = cu_seq_lens_q.tolist()
    outputs = [
        sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None,
                               dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
        for start, end in zip(bounds[:-1], bounds[1:]) if end > start
    ]
    return torch.cat(outputs, dim=1), None  # (1, tokens, heads, head_dim), as SDPA returns it


def register() -> str:
    """Register ``sdpa_rows`` with transformers (attention and its mask: SDPA's, for the fallback)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, sdpa_rows_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
