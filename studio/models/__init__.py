"""Model registry: built-in offline models, Hugging Face Hub ids and local folders.

    from studio.models import SMOLLM2, inspect, prepare, load_model
    info = inspect(SMOLLM2)            # config only: kind, shape, parameter count
    folder = prepare(SMOLLM2)          # a folder plain `from_pretrained` loads (built once, cached)
    model = load_model(folder, info.kind, dtype="bfloat16")

Importing this package is cheap: torch and transformers are imported inside the functions that need them.
"""
from .builtin import SMOLLM2, TINY_QWEN_VL, TINY_QWEN_VL_SMALLVOCAB
from .errors import (
    HubUnreachableError,
    InvalidModelFolderError,
    MissingPackageError,
    ModelError,
    ModelNotFoundError,
    RemoteCodeRequiredError,
    UnknownModelRefError,
    UnsupportedModelError,
)
from .info import TEXT, VISION_LANGUAGE, ModelInfo
from .loading import load_model, load_tokenizer_or_processor, resolve_dtype
from .registry import Ref, inspect, list_builtin, parse_ref, prepare, prepared_path, validate_folder

__all__ = [
    "SMOLLM2", "TINY_QWEN_VL", "TINY_QWEN_VL_SMALLVOCAB", "TEXT", "VISION_LANGUAGE", "ModelInfo", "Ref",
    "inspect", "list_builtin", "parse_ref", "prepare", "prepared_path", "validate_folder",
    "load_model", "load_tokenizer_or_processor", "resolve_dtype",
    "ModelError", "UnknownModelRefError", "ModelNotFoundError", "HubUnreachableError", "InvalidModelFolderError",
    "UnsupportedModelError", "RemoteCodeRequiredError", "MissingPackageError",
]
