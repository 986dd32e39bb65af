"""Trainable parameters of the PEFT methods beyond LoRA, from the model's shapes alone (no peft, no torch).

Each count follows what peft 0.21 builds (``get_nb_trainable_parameters``); tests/estimate compares
them with peft on real models for every method of the studio's table:

- IA3 [IA3]: one vector per adapted layer: its output size, or its input size for feed-forward layers.
- VeRA [VERA]: per layer ``lambda_b`` (output size) and ``lambda_d`` (r); the shared A/B are frozen.
- LoHa [LOHA]: two low-rank pairs per layer: 2 r (in + out).
- LoKr [LOKR]: Kronecker factors of peft's ``factorization`` of in/out sizes, each full or rank r.
- OFT [OFT]: per layer ``in / block`` skew-symmetric blocks of ``block (block - 1) / 2`` numbers.
- BOFT [BOFT]: per layer ``factor`` block-diagonal rotations of ``in / block`` full ``block x block`` blocks
  (peft trains the whole block and takes its skew part) plus a scale per output feature.
- BitFit (peft BEFT): one bias vector (output size) per adapted layer.
- Prompt tuning: ``tokens x hidden``. Prefix tuning: ``tokens x layers x 2 x kv size`` (peft sizes
  prefixes by the key/value heads), or with its MLP: embedding + Linear(kv, h) + Linear(h, layers x 2 x kv).
  P-tuning: embedding + the prompt encoder (3-layer MLP, or a 2-layer bidirectional LSTM + 2 linears).
- Blocks (freeze / full fine-tuning, peft LN-tuning): whole decoder blocks, final norm, untied embeddings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.estimate.arch import Linear, ModelArch
    from studio.estimate.request import EstimateRequest

PER_LINEAR = ("ia3", "vera", "loha", "lokr", "oft", "boft", "bitfit")
PROMPT = ("prompt_tuning", "prefix_tuning", "p_tuning")


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft's LoKr ``factorization`` (tuners/lokr/layer.py), ported: two factors m <= n of ``dimension``,
    one as close to ``factor`` as possible (-1: near the square root)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


def lokr_params(l: "Linear", r: int, factor: int, decompose_both: bool) -> int:
    in_m, in_n = factorization(l.fan_in, factor)
    out_l, out_k = factorization(l.fan_out, factor)
    use_w1 = not (decompose_both and r < max(out_l, in_m) / 2)
    use_w2 = not (r < max(out_k, in_n) / 2)
    w1 = out_l * in_m if use_w1 else r * (out_l + in_m)
    w2 = out_k * in_n if use_w2 else r * (out_k + in_n)
    return w1 + w2


def per_linear_params(l: "Linear", req: "EstimateRequest") -> int:
    m, r = req.method, req.lora_rank
    if m == "ia3":
        leaf = l.name.rsplit(".", 1)[-1]
        return l.fan_in if (l.name in req.feedforward or leaf in req.feedforward) else l.fan_out
    if m == "vera":
        return l.fan_out + r
    if m == "loha":
        return 2 * r * (l.fan_in + l.fan_out)
    if m == "lokr":
        return lokr_params(l, r, req.lokr_factor, req.lokr_decompose_both)
    if m == "oft":
        b = req.oft_block_size
        return (l.fan_in // b) * (b * (b - 1) // 2)
    if m == "boft":
        return req.boft_butterfly_factor * l.fan_in * req.oft_block_size + l.fan_out
    if m == "bitfit":
        return l.fan_out
    raise ValueError(f"{m} has no per-layer adapter")


def prompt_params(arch: "ModelArch", req: "EstimateRequest") -> int:
    n, h, e = req.virtual_tokens, arch.hidden, req.encoder_hidden
    if req.method == "prompt_tuning":
        return n * h
    if req.method == "prefix_tuning":
        kv = arch.kv_dim
        if not e:
            return n * arch.layers * 2 * kv
        return n * kv + (kv * e + e) + (e * arch.layers * 2 * kv + arch.layers * 2 * kv)
    # P-tuning: embedding + encoder
    if req.prompt_encoder == "LSTM":
        lstm = sum(2 * 4 * (e * size_in + e * e + 2 * e) for size_in in (h, 2 * e))  # 2 layers, 2 directions
        return n * h + lstm + (2 * e * 2 * e + 2 * e) + (2 * e * h + h)
    return n * h + (h * e + e) + (e * e + e) + (e * h + h)


def block_params(arch: "ModelArch") -> int:
    return arch.layer_linear_params + arch.norms_per_layer * arch.hidden


def blocks_params(arch: "ModelArch", req: "EstimateRequest") -> int:
    """Freeze tuning (the last ``train_blocks``) and full fine-tuning (-1: all blocks) as the studio runs
    them: whole blocks, the final norm, and the embedding and LM head only when they are not tied."""
    blocks = arch.layers if req.train_blocks < 0 else min(req.train_blocks, arch.layers)
    n = blocks * block_params(arch) + (arch.hidden if req.train_final_norm else 0)
    if req.train_embeddings and not arch.tied:
        n += arch.embedding_params + arch.lm_head_params
    return n


def extra_trainable(arch: "ModelArch", req: "EstimateRequest") -> int:
    """What LongLoRA-style runs train beside LoRA: the embedding (once, tied or not) and every norm."""
    n = arch.embedding_params if req.train_embeddings else 0
    if req.train_norms:
        n += arch.norm_params
    return n
