"""What a model is, read from its config.json alone (never its weights).

``describe_config`` turns a raw config dict into a :class:`ModelInfo`: text vs vision-language, the
language model's shape, and an exact parameter count obtained by instantiating the architecture on
PyTorch's ``meta`` device (shapes only, no memory, ~0.1-0.3 s even for 70 B models). Models whose
code transformers does not ship (``auto_map`` / remote code) are never executed here: their count
comes from a formula over the standard decoder shape instead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UnsupportedModelError

TEXT = "text"
VISION_LANGUAGE = "vision-language"

# Name fragments of vision-language architectures, for configs of models transformers doesn't ship.
_VL_ARCH_HINTS = ("VL", "Vision", "Llava", "ImageTextToText", "Vlm", "VLM")


@dataclass
class ModelInfo:
    """Description of a model for the UI, the estimator and the trainer.

    Shape fields describe the language model (for a vision-language model: its text decoder); the
    vision tower is summarised in ``vision``. ``config`` is the raw config.json dict, sub-configs
    included. ``trust_remote_code`` is the per-model opt-in the caller gave (default False);
    ``requires_remote_code`` says whether the model cannot be loaded without it.
    """

    ref: str
    source: str  # "builtin" | "hub" | "local"
    kind: str  # "text" | "vision-language"
    display_name: str
    description: str
    architecture: str | None
    model_type: str | None
    hidden_size: int | None
    num_layers: int | None
    num_attention_heads: int | None
    num_kv_heads: int | None
    intermediate_size: int | None
    vocab_size: int | None
    num_parameters: int | None
    is_test_model: bool
    trust_remote_code: bool
    config: dict = field(repr=False)
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    tie_word_embeddings: bool | None = None
    dtype: str | None = None  # dtype the weights were saved in, per config ("bfloat16", "float32", ...)
    requires_remote_code: bool = False
    vision: dict | None = None  # vision tower: depth, hidden_size, patch_size, spatial_merge_size, ...

    @property
    def is_vision_language(self) -> bool:
        return self.kind == VISION_LANGUAGE

    def to_dict(self, *, with_config: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_config:
            data.pop("config")
        return data


def describe_config(cfg: dict, *, ref: str, source: str, display_name: str, description: str = "",
                    is_test_model: bool = False, trust_remote_code: bool = False,
                    kind: str | None = None, num_parameters: int | None = None) -> ModelInfo:
    """Build a ModelInfo from a raw config.json dict. Raises UnsupportedModelError for models the
    studio cannot fine-tune (encoders, classifiers, non-generative vision models...).

    Built-ins pass ``kind`` and ``num_parameters`` (known in advance, checked by tests): then the
    complete config dict is read as is and neither torch nor transformers is imported, which keeps
    the UI process, which lists built-ins at startup, fast.
    """
    known = kind is not None and num_parameters is not None
    kind = kind or classify(cfg, ref)
    config = None if known else _config_object(cfg)
    text = _text_section(cfg, config)
    hidden, heads = _get(text, "hidden_size"), _get(text, "num_attention_heads")
    return ModelInfo(
        ref=ref, source=source, kind=kind, display_name=display_name,
        description=description or _default_description(cfg, kind),
        architecture=(cfg.get("architectures") or [None])[0],
        model_type=cfg.get("model_type"),
        hidden_size=hidden,
        num_layers=_get(text, "num_hidden_layers", "n_layer", "num_layers"),
        num_attention_heads=heads,
        num_kv_heads=_get(text, "num_key_value_heads", "num_kv_heads") or heads,
        intermediate_size=_get(text, "intermediate_size", "ffn_dim", "n_inner"),
        vocab_size=_get(text, "vocab_size") or cfg.get("vocab_size"),
        num_parameters=num_parameters if num_parameters is not None else count_parameters(cfg, config, kind),
        is_test_model=is_test_model,
        trust_remote_code=trust_remote_code,
        config=cfg,
        head_dim=_get(text, "head_dim") or (hidden // heads if hidden and heads else None),
        max_position_embeddings=_get(text, "max_position_embeddings", "n_positions"),
        tie_word_embeddings=_tied(cfg, config),
        dtype=_dtype_name(cfg.get("dtype") or cfg.get("torch_dtype") or _get(text, "dtype", "torch_dtype")),
        requires_remote_code=False if known else requires_remote_code(cfg),
        vision=_vision_summary(cfg) if kind == VISION_LANGUAGE else None,
    )


# -- classification ---------------------------------------------------------------------------------
def requires_remote_code(cfg: dict) -> bool:
    """True when transformers has no class for this model_type (its code lives in the repository)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return cfg.get("model_type") not in CONFIG_MAPPING_NAMES


def classify(cfg: dict, ref: str = "model") -> str:
    """"text" or "vision-language", from the config only.

    Known model types: by the transformers task mappings (image-text-to-text vs causal LM); a model
    type in both (e.g. Gemma 3) counts as vision-language when its config has a vision tower.
    Unknown (remote code) types: by ``vision_config`` and the architecture name.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    model_type = cfg.get("model_type")
    has_vision = "vision_config" in cfg
    if requires_remote_code(cfg):
        archs = " ".join(cfg.get("architectures") or [])
        return VISION_LANGUAGE if has_vision or any(h in archs for h in _VL_ARCH_HINTS) else TEXT
    in_vl = model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    in_lm = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if in_vl and (has_vision or not in_lm):
        return VISION_LANGUAGE
    if in_lm:
        return TEXT
    raise UnsupportedModelError(
        f"{ref} is a {model_type!r} model ({', '.join(cfg.get('architectures') or ['no architecture'])}), "
        "which does not generate text. The studio fine-tunes causal language models and "
        "vision-language (image-text-to-text) models.")


def auto_class(kind: str):
    """The transformers Auto class that loads a model of this kind."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if kind == VISION_LANGUAGE else AutoModelForCausalLM


# -- parameter count --------------------------------------------------------------------------------
def count_parameters(cfg: dict, config, kind: str) -> int | None:
    """Exact count via a meta-device instance when transformers ships the class, else a formula."""
    if config is not None:
        try:
            return _meta_count(config, kind)
        except Exception:  # an exotic config the Auto class rejects: fall back to the formula
            pass
    return _formula_count(_text_section(cfg, None), cfg)


def _meta_count(config, kind: str) -> int:
    import torch

    with torch.device("meta"):
        model = auto_class(kind).from_config(config)
    return sum(p.numel() for p in model.parameters())  # tied weights are one Parameter: counted once


def _formula_count(text: Any, cfg: dict) -> int | None:
    """Standard decoder: embeddings + layers x (attention + gated MLP + 2 norms) + norm + lm_head."""
    hidden, layers = _get(text, "hidden_size"), _get(text, "num_hidden_layers", "n_layer", "num_layers")
    heads, inter, vocab = _get(text, "num_attention_heads"), _get(text, "intermediate_size"), _get(text, "vocab_size")
    if not all((hidden, layers, heads, inter, vocab)):
        return None
    kv = _get(text, "num_key_value_heads") or heads
    head_dim = _get(text, "head_dim") or hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    tied = cfg.get("tie_word_embeddings", _get(text, "tie_word_embeddings"))
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


# -- config helpers ---------------------------------------------------------------------------------
def _config_object(cfg: dict):
    """A transformers config object (defaults filled in), or None for remote-code / invalid configs."""
    if requires_remote_code(cfg):
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[cfg["model_type"]].from_dict(dict(cfg))
    except Exception:
        return None


def _text_section(cfg: dict, config) -> Any:
    """The language model's config (object when available, else the raw dict or its text_config)."""
    if config is not None:
        return config.get_text_config(decoder=True)
    return {**cfg, **(cfg.get("text_config") or {})}


def _get(section: Any, *names: str):
    for name in names:
        value = section.get(name) if isinstance(section, dict) else getattr(section, name, None)
        if value is not None:
            return value
    return None


def _dtype_name(dtype) -> str | None:
    # A config object may hold a torch.dtype; ModelInfo stays JSON-serialisable.
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _tied(cfg: dict, config) -> bool | None:
    if config is not None:
        return bool(getattr(config, "tie_word_embeddings", False))
    return cfg.get("tie_word_embeddings")


def _vision_summary(cfg: dict) -> dict | None:
    vision = cfg.get("vision_config")
    if not isinstance(vision, dict):
        return None
    keys = ("model_type", "depth", "num_hidden_layers", "hidden_size", "out_hidden_size", "num_heads",
            "num_attention_heads", "patch_size", "spatial_merge_size", "image_size")
    return {k: vision[k] for k in keys if k in vision}


def _default_description(cfg: dict, kind: str) -> str:
    arch = (cfg.get("architectures") or [cfg.get("model_type", "unknown")])[0]
    what = "vision-language model" if kind == VISION_LANGUAGE else "text model"
    return f"{arch} {what}"
