"""Which adapter a pane uses, and whether it can be put on the chosen base model.

Checks run before the model is touched, so a bad adapter never leaves half-injected layers behind:
the row and folder exist, the adapter was trained on this base (the ``Adapter`` row's
``base_model_ref``; ``adapter_config.json``'s ``base_model_name_or_path`` when the row has none),
and its weight shapes fit the loaded model's layers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.db import Database
from storage.models import Adapter, Run

from .errors import PaneError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class AdapterRef:
    """An adapter as the engine needs it: where its files are and what it was trained on."""

    id: int
    name: str
    path: Path  # absolute folder with adapter_config.json + adapter_model.safetensors
    base_model_ref: str = ""
    method: str = ""
    min_pixels: int | None = None  # the image bounds it was trained with (vision-language runs)
    max_pixels: int | None = None

    @property
    def peft_name(self) -> str:
        # peft refuses adapter names that are substrings of its prefixes ("lora_"): keep it plain.
        return f"adapter{self.id}"

    @property
    def label(self) -> str:
        return f"{self.name} (#{self.id})"


def label_of(db: Database, adapter_id: int) -> str:
    with db.session() as s:
        row = s.get(Adapter, adapter_id)
        return f"{row.name} (#{adapter_id})" if row else f"adapter #{adapter_id} (deleted)"


def resolve(db: Database, adapter_id: int) -> AdapterRef:
    """The adapter row as an AdapterRef; PaneError if it no longer exists."""
    with db.session() as s:
        row = s.get(Adapter, adapter_id)
        if row is None:
            raise PaneError(f"adapter #{adapter_id} no longer exists (it was deleted). Start a new chat "
                            "without it.")
        run = s.get(Run, row.run_id) if row.run_id is not None else None
        vision = ((run.spec or {}).get("vision") or {}) if run is not None else {}
        return AdapterRef(id=row.id, name=row.name, path=db.workspace.root / row.path,
                          base_model_ref=row.base_model_ref or "", method=row.method or "",
                          min_pixels=vision.get("min_pixels"), max_pixels=vision.get("max_pixels"))


def read_config(adapter: AdapterRef) -> dict[str, Any]:
    """adapter_config.json, after checking the folder holds an adapter at all."""
    folder = adapter.path
    if not folder.is_dir():
        raise PaneError(f"the folder of adapter {adapter.label} is missing ({folder}): it was moved or deleted. "
                        "Train it again or remove it from this chat.")
    config_file = folder / ADAPTER_CONFIG
    if not config_file.is_file():
        raise PaneError(f"adapter {adapter.label}: {folder} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter "
                        "folder (was the training run finished?).")
    if not any((folder / w).is_file() for w in ADAPTER_WEIGHTS):
        raise PaneError(f"adapter {adapter.label}: {folder} has no adapter weights ({ADAPTER_WEIGHTS[0]}).")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PaneError(f"adapter {adapter.label}: {config_file} is not valid JSON ({e}).") from None


def check_base(adapter: AdapterRef, config: dict[str, Any], base_ref: str, base_folder: Path | None) -> None:
    """Refuse an adapter trained on another base model: its answers would be meaningless."""
    if adapter.base_model_ref:
        if adapter.base_model_ref != base_ref:
            raise PaneError(f"adapter {adapter.label} was trained on {adapter.base_model_ref}, not on {base_ref}. "
                            f"Choose {adapter.base_model_ref} as the base model to chat with it.")
        return
    # No ref on the row (an imported adapter): fall back to what peft wrote at training time.
    recorded = str(config.get("base_model_name_or_path") or "")
    accepted = {base_ref, str(base_folder or ""), Path(str(base_folder or "")).name}
    if recorded and recorded not in accepted and Path(recorded).name not in accepted:
        raise PaneError(f"adapter {adapter.label} was trained on {recorded}, not on {base_ref}.")


def check_fits(model: Any, adapter: AdapterRef) -> None:
    """Compare the adapter's low-rank weight shapes with the model's layers, without loading them.

    Catches an adapter for a different architecture or size even when the names say otherwise
    (peft would fail half-way through injecting layers, leaving the model in a mixed state)."""
    weights = adapter.path / ADAPTER_WEIGHTS[0]
    if not weights.is_file():
        return  # a .bin adapter: peft's own loading reports problems
    from safetensors import safe_open

    modules: dict[str, Any] = {}
    for name, module in model.named_modules():
        # an attached adapter that wraps whole blocks (freeze/full tuning) puts ".base_layer" inside the names
        modules.setdefault(name.replace(".base_layer", ""), module)
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            found = _lora_key(key)
            if found is None:
                continue
            module_name, which = found
            module = _find_module(modules, module_name)
            if module is None:
                raise PaneError(f"adapter {adapter.label} does not fit this base model: it has weights for layer "
                                f"{module_name!r}, which the model does not have (another architecture?).")
            shape = list(f.get_slice(key).get_shape())
            _check_shape(adapter, module_name, module, which, shape)


def _lora_key(key: str) -> tuple[str, str] | None:
    for which in ("lora_A", "lora_B"):
        marker = f".{which}."
        if marker in key:
            return key.split(marker, 1)[0], which
    return None


def _find_module(modules: dict[str, Any], saved_name: str) -> Any:
    # Saved keys start with "base_model.model." (the PeftModel wrapper); the bare model lacks it.
    for prefix in ("base_model.model.", ""):
        if saved_name.startswith(prefix) and saved_name[len(prefix):] in modules:
            return modules[saved_name[len(prefix):]]
    return modules.get(saved_name)


def _check_shape(adapter: AdapterRef, name: str, module: Any, which: str, shape: list[int]) -> None:
    in_f = getattr(module, "in_features", None)
    out_f = getattr(module, "out_features", None)
    if len(shape) != 2 or in_f is None or out_f is None:
        return  # embeddings / convolutions: leave them to peft
    if which == "lora_A" and shape[1] != in_f or which == "lora_B" and shape[0] != out_f:
        expected = in_f if which == "lora_A" else out_f
        got = shape[1] if which == "lora_A" else shape[0]
        raise PaneError(f"adapter {adapter.label} does not fit this base model: layer {name!r} has "
                        f"{expected} {'inputs' if which == 'lora_A' else 'outputs'} here but {got} in the adapter "
                        "(it was trained on a model of another size).")
