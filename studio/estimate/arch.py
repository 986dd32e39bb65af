"""A model's shapes, read from its config.json alone (no weights, no torch).

``ModelArch.from_config`` understands the flat decoder configs of Llama / Mistral / Qwen2 / Gemma-2 /
Phi-3 / SmolLM2 and Qwen2.5-VL (flat, as released, or with ``text_config`` nested as transformers 5
writes it). Parameter counts follow the modules HF transformers builds for these architectures:
per layer the attention projections (q/k/v/o, with q/k/v biases on Qwen2), the gated MLP
(gate/up/down), the RMSNorms; then the token embedding, the final norm and the LM head unless tied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Architectures whose attention q/k/v projections carry a bias (Qwen2: "attention QKV bias").
_QKV_BIAS_TYPES = {"qwen2", "qwen2_vl", "qwen2_5_vl", "qwen2_5_vl_text", "qwen2_vl_text"}
# Config classes whose ``tie_word_embeddings`` default is True (Gemma*); most others default False.
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3_text"}
# Gemma-2 has 4 RMSNorms per layer (pre/post attention, pre/post feed-forward); the others 2.
_NORMS_PER_LAYER = {"gemma2": 4, "gemma3_text": 4}
# Phi-3 fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``.
_FUSED_TYPES = {"phi3"}


@dataclass(frozen=True)
class Linear:
    """One linear layer of a transformer block: ``name``, fan-in, fan-out, and its group."""

    name: str
    fan_in: int
    fan_out: int
    group: str  # "attention" | "mlp"
    bias: bool = False

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)


@dataclass(frozen=True)
class VisionArch:
    """Qwen2.5-VL vision tower (ViT with window attention + 2x2 patch merger)."""

    depth: int
    hidden: int
    intermediate: int
    heads: int
    out_hidden: int
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2
    in_chans: int = 3
    window: int = 112
    full_att_blocks: tuple[int, ...] = ()
    gated: bool = True

    @classmethod
    def from_config(cls, v: dict[str, Any], text_hidden: int) -> "VisionArch":
        hidden = int(v.get("hidden_size") or v.get("embed_dim"))
        if "intermediate_size" in v and v.get("depth"):
            inter, gated = int(v["intermediate_size"]), True  # Qwen2.5-VL: SwiGLU MLP
        else:
            inter, gated = int(hidden * float(v.get("mlp_ratio", 4))), False  # Qwen2-VL: GELU MLP
        if "embed_dim" in v and "hidden_size" in v and "out_hidden_size" not in v:
            hidden, out = int(v["embed_dim"]), int(v["hidden_size"])  # Qwen2-VL naming
        else:
            out = int(v.get("out_hidden_size", text_hidden))
        return cls(depth=int(v["depth"]), hidden=hidden, intermediate=inter, heads=int(v["num_heads"]),
                   out_hidden=out, patch=int(v.get("patch_size", 14)), merge=int(v.get("spatial_merge_size", 2)),
                   temporal_patch=int(v.get("temporal_patch_size", 2)),
                   in_chans=int(v.get("in_chans", v.get("in_channels", 3))),
                   window=int(v.get("window_size", 0) or 0),
                   full_att_blocks=tuple(v.get("fullatt_block_indexes") or ()), gated=gated)

    def block_linears(self) -> list[Linear]:
        h, i = self.hidden, self.intermediate
        out = [Linear("attn.qkv", h, 3 * h, "attention", True), Linear("attn.proj", h, h, "attention", True)]
        if self.gated:
            out += [Linear("mlp.gate_proj", h, i, "mlp", True), Linear("mlp.up_proj", h, i, "mlp", True),
                    Linear("mlp.down_proj", i, h, "mlp", True)]
        else:
            out += [Linear("mlp.fc1", h, i, "mlp", True), Linear("mlp.fc2", i, h, "mlp", True)]
        return out

    @property
    def params(self) -> int:
        """Conv3d patch embedding (no bias) + blocks (2 RMSNorms each) + merger (norm, 2 linears)."""
        patch_embed = self.in_chans * self.temporal_patch * self.patch * self.patch * self.hidden
        block = sum(l.params for l in self.block_linears()) + 2 * self.hidden
        merged = self.hidden * self.merge ** 2
        merger = self.hidden + (merged * merged + merged) + (merged * self.out_hidden + self.out_hidden)
        return patch_embed + self.depth * block + merger


@dataclass(frozen=True)
class ModelArch:
    """The decoder's shapes plus, for vision-language models, the vision tower's."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int
    qkv_bias: bool = False
    norms_per_layer: int = 2
    fused: bool = False
    logit_softcap: float | None = None
    vision: VisionArch | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelArch":
        text = {**config, **(config.get("text_config") or {})}
        mtype = str(config.get("model_type") or text.get("model_type") or "llama")
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        kv = int(text.get("num_key_value_heads") or heads)
        tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings"))
        if tied is None:
            tied = mtype in _TIED_BY_DEFAULT
        vision = None
        if config.get("vision_config"):
            vision = VisionArch.from_config(config["vision_config"], hidden)
        return cls(model_type=mtype, hidden=hidden, layers=int(text["num_hidden_layers"]), heads=heads,
                   kv_heads=kv, head_dim=int(text.get("head_dim") or hidden // heads),
                   intermediate=int(text.get("intermediate_size") or 4 * hidden), vocab=int(text["vocab_size"]),
                   tied=bool(tied), max_positions=int(text.get("max_position_embeddings") or 0),
                   qkv_bias=bool(text.get("attention_bias")) or mtype in _QKV_BIAS_TYPES,
                   norms_per_layer=_NORMS_PER_LAYER.get(mtype, 2), fused=mtype in _FUSED_TYPES,
                   logit_softcap=text.get("final_logit_softcapping"), vision=vision)

    # -- shapes ------------------------------------------------------------------------------

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linears(self) -> list[Linear]:
        """The linear layers of one decoder block, as HF names them."""
        h, i, q, kv, b = self.hidden, self.intermediate, self.q_dim, self.kv_dim, self.qkv_bias
        if self.fused:
            return [Linear("qkv_proj", h, q + 2 * kv, "attention", b), Linear("o_proj", q, h, "attention"),
                    Linear("gate_up_proj", h, 2 * i, "mlp"), Linear("down_proj", i, h, "mlp")]
        return [Linear("q_proj", h, q, "attention", b), Linear("k_proj", h, kv, "attention", b),
                Linear("v_proj", h, kv, "attention", b), Linear("o_proj", q, h, "attention"),
                Linear("gate_proj", h, i, "mlp"), Linear("up_proj", h, i, "mlp"), Linear("down_proj", i, h, "mlp")]

    # -- parameter counts ----------------------------------------------------------------------

    @property
    def layer_linear_params(self) -> int:
        return sum(l.params for l in self.layer_linears())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return self.layers * self.norms_per_layer * self.hidden + self.hidden

    @property
    def text_params(self) -> int:
        """Decoder parameters: blocks + embedding + final norm + untied LM head."""
        return self.layers * self.layer_linear_params + self.norm_params + self.embedding_params + self.lm_head_params

    @property
    def vision_params(self) -> int:
        return self.vision.params if self.vision else 0

    @property
    def total_params(self) -> int:
        return self.text_params + self.vision_params

    @property
    def quantizable_params(self) -> int:
        """Parameters bitsandbytes replaces: the decoder blocks' linear weights (not their biases,
        not embeddings, norms, the LM head or, in this studio, the vision tower)."""
        return self.layers * sum(l.fan_in * l.fan_out for l in self.layer_linears())

    @property
    def largest_linear(self) -> int:
        return max(l.fan_in * l.fan_out for l in self.layer_linears())
