"""The model registry: one way to name, describe and fetch every model the studio can fine-tune.

A model reference (``ref``) is one of:
- ``builtin:<name>``: a model the studio makes offline (see ``builtin.py``),
- a local folder (absolute or relative path, optionally prefixed ``local:``) holding a Hugging Face
  model (config.json + weights + tokenizer),
- a Hugging Face Hub id ``org/name`` (optionally ``hub:org/name`` or ``org/name@revision``).
An existing folder wins over a Hub id of the same spelling, as in ``from_pretrained``.

``inspect`` reads the config only (cheap; for the UI and the memory estimator); ``prepare`` returns a
folder that plain ``from_pretrained`` loads (builtins are built once into a cache and reused).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

from . import cache, hub
from .builtin import BUILTINS, SMOLLM2, TINY_QWEN_VL, TINY_QWEN_VL_SMALLVOCAB, Builtin
from .errors import (
    InvalidModelFolderError,
    ModelNotFoundError,
    RemoteCodeRequiredError,
    UnknownModelRefError,
)
from .info import VISION_LANGUAGE, ModelInfo, describe_config

__all__ = ["SMOLLM2", "TINY_QWEN_VL", "TINY_QWEN_VL_SMALLVOCAB", "ModelInfo", "Ref", "parse_ref", "inspect",
           "list_builtin", "prepare", "prepared_path"]

Progress = Callable[[float, str], None]

BUILTIN_PREFIX, LOCAL_PREFIX, HUB_PREFIX = "builtin:", "local:", "hub:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@dataclasses.dataclass(frozen=True)
class Ref:
    """A parsed model reference: where it comes from and the normalised name there."""
    source: str  # "builtin" | "local" | "hub"
    name: str  # builtin ref, absolute folder path, or Hub id (with @revision if given)


def parse_ref(ref: str | os.PathLike) -> Ref:
    """Classify a reference; raises UnknownModelRefError / ModelNotFoundError with a hint."""
    text = str(ref).strip()
    if text.startswith(BUILTIN_PREFIX):
        if text not in BUILTINS:
            raise UnknownModelRefError(f"unknown built-in model {text!r}; built-ins are: {', '.join(BUILTINS)}")
        return Ref("builtin", text)
    if text.startswith(HUB_PREFIX):
        return _hub_ref(text[len(HUB_PREFIX):])
    explicit_local = text.startswith(LOCAL_PREFIX)
    path = Path(text[len(LOCAL_PREFIX):] if explicit_local else text).expanduser()
    if path.is_dir():
        return Ref("local", str(path.resolve()))
    if explicit_local or text.startswith(("/", ".", "~")) or path.exists():
        what = " (it is a file, not a folder)" if path.exists() else ""
        raise ModelNotFoundError(f"no model folder at {text}{what}")
    if _HUB_ID.match(text):
        return _hub_ref(text)
    raise UnknownModelRefError(
        f"{text!r} is not a model reference: use a built-in ({', '.join(BUILTINS)}), a local folder, "
        "or a Hugging Face Hub id such as Qwen/Qwen2.5-VL-3B-Instruct")


def _hub_ref(repo: str) -> Ref:
    if not _HUB_ID.match(repo):
        raise UnknownModelRefError(f"{repo!r} is not a Hugging Face Hub id (expected org/name)")
    return Ref("hub", repo)


# -- inspect ----------------------------------------------------------------------------------------
def inspect(ref: str | os.PathLike, *, trust_remote_code: bool = False) -> ModelInfo:
    """Describe a model from its config alone: never downloads or reads weights.

    Builtins need nothing prepared; local folders need a config.json; Hub ids are read from the
    local Hugging Face cache, else from the Hub (HubUnreachableError when neither works).
    ``trust_remote_code`` is only recorded here (custom code is never executed by inspect).
    """
    r = parse_ref(ref)
    if r.source == "builtin":
        return _builtin_info(BUILTINS[r.name])
    if r.source == "local":
        cfg, name = _read_local_config(Path(r.name)), Path(r.name).name
    else:
        cfg, name = hub.fetch_config(r.name), r.name
    return describe_config(cfg, ref=r.name, source=r.source, display_name=name,
                           trust_remote_code=trust_remote_code)


def list_builtin() -> list[ModelInfo]:
    """All built-in models, real ones first."""
    infos = [_builtin_info(b) for b in BUILTINS.values()]
    return sorted(infos, key=lambda i: i.is_test_model)


_builtin_cache: dict[str, ModelInfo] = {}


def _builtin_info(b: Builtin) -> ModelInfo:
    if b.ref not in _builtin_cache:  # the config is fixed in code
        _builtin_cache[b.ref] = describe_config(
            b.config(), ref=b.ref, source="builtin", display_name=b.display_name, description=b.description,
            is_test_model=b.is_test_model, kind=b.kind, num_parameters=b.num_parameters)
    info = _builtin_cache[b.ref]
    return dataclasses.replace(info, config=copy.deepcopy(info.config))  # callers may mutate their copy


def _read_local_config(folder: Path) -> dict:
    config = folder / "config.json"
    if not config.is_file():
        if (folder / "adapter_config.json").is_file():
            raise InvalidModelFolderError(
                f"{folder} holds a PEFT adapter, not a full model: use its base model and attach the adapter.")
        raise InvalidModelFolderError(f"{folder} has no config.json: not a Hugging Face model folder")
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidModelFolderError(f"{config} is not valid JSON: {e}") from e


# -- prepare ----------------------------------------------------------------------------------------
def prepare(ref: str | os.PathLike, *, progress: Progress | None = None, trust_remote_code: bool = False,
            cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder with config, weights and tokenizer (+ processor for VL) for ``from_pretrained``.

    Builtins are built once into the model cache (``$FTS_MODEL_CACHE`` or ``<workspace>/models/
    builtin``) and reused; Hub ids are downloaded into the Hugging Face cache; local folders are
    validated and returned as they are. ``progress(fraction, message)`` reports stages.
    ``cache_dir`` overrides the built-in model cache (tests; a shared cache on a cluster).
    """
    report = progress or (lambda fraction, message: None)
    r = parse_ref(ref)
    if r.source == "builtin":
        return _prepare_builtin(BUILTINS[r.name], report, _cache_dir(cache_dir))
    info = inspect(r.name, trust_remote_code=trust_remote_code)
    if info.requires_remote_code and not trust_remote_code:
        raise RemoteCodeRequiredError(r.name, info.model_type)
    if r.source == "hub":
        folder = hub.download(r.name, trust_remote_code=trust_remote_code, progress=report)
    else:
        folder = Path(r.name)
    validate_folder(folder, info.kind)
    report(1.0, f"{r.name} ready")
    return folder


def prepared_path(ref: str, *, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache folder of a built-in if it is already prepared, else None (builds nothing)."""
    b = BUILTINS.get(parse_ref(ref).name)
    if b is None:
        raise UnknownModelRefError(f"{ref!r} is not a built-in model")
    folder = _cache_dir(cache_dir) / b.folder_name
    return folder if cache.is_complete(folder) else None


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser().resolve() if cache_dir else cache.cache_root()


def _prepare_builtin(b: Builtin, report: Progress, root: Path) -> Path:
    final = root / b.folder_name
    if cache.is_complete(final):
        report(1.0, f"{b.display_name} already prepared at {final}")
        return final

    def build(stage: Path) -> dict:
        b.build(stage, report)
        validate_folder(stage, b.kind)
        return {"ref": b.ref, "recipe_version": b.version, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **_library_versions()}

    report(0.0, f"preparing {b.display_name} (once; cached in {final.parent})")
    folder = cache.materialise(final, build)
    report(1.0, f"{b.display_name} ready at {folder}")
    return folder


def validate_folder(folder: Path, kind: str) -> None:
    """Check that a folder has what loading needs; name every missing piece at once."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(any(folder.glob(g)) for g in _WEIGHT_GLOBS):
        missing.append("weights (*.safetensors)")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json / tokenizer_config.json)")
    if kind == VISION_LANGUAGE and not any((folder / f).is_file() for f in _PROCESSOR_FILES):
        missing.append("image processor config (processor_config.json / preprocessor_config.json)")
    if missing:
        raise InvalidModelFolderError(f"{folder} is not a complete model folder; missing: {', '.join(missing)}")


def _library_versions() -> dict:
    import torch
    import transformers

    return {"transformers_version": transformers.__version__, "torch_version": torch.__version__}
