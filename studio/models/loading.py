"""Loading a prepared model folder: one place that picks the right Auto class for a model kind.

Training, chat and export call these with the folder from ``registry.prepare``. ``trust_remote_code``
stays False unless the caller passes True for this one model (DESIGN.md: never on by default).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .info import TEXT, VISION_LANGUAGE, auto_class

_DTYPE_ALIASES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}


def resolve_dtype(dtype: Any):
    """``"auto"`` (the dtype in config.json), a torch.dtype, or a name such as "bf16" / "float32"."""
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype or "auto"
    name = _DTYPE_ALIASES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")
    return getattr(torch, name)


def load_tokenizer_or_processor(path: str | os.PathLike, kind: str, trust_remote_code: bool = False):
    """The tokenizer (text models) or the processor (vision-language: tokenizer + image processor)."""
    from transformers import AutoProcessor, AutoTokenizer

    _check_kind(kind)
    loader = AutoProcessor if kind == VISION_LANGUAGE else AutoTokenizer
    return loader.from_pretrained(Path(path), trust_remote_code=trust_remote_code)


def load_model(path: str | os.PathLike, kind: str, *, dtype: Any = "auto", device_map: Any = None,
               quantization_config: Any = None, trust_remote_code: bool = False):
    """Load weights with ``AutoModelForCausalLM`` (text) or ``AutoModelForImageTextToText`` (VL).

    ``device_map`` ("auto", "cuda:0", a dict...) and ``quantization_config`` (e.g. a bitsandbytes
    4-bit config for QLoRA) are passed through to ``from_pretrained`` unchanged.
    """
    _check_kind(kind)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    return auto_class(kind).from_pretrained(Path(path), **kwargs)


def _check_kind(kind: str) -> None:
    if kind not in (TEXT, VISION_LANGUAGE):
        raise ValueError(f"kind must be {TEXT!r} or {VISION_LANGUAGE!r}, not {kind!r}")
