"""Bundled config.json fields of popular models, so estimates work offline."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG_FILE = Path(__file__).with_name("configs") / "models.json"


class UnknownModel(KeyError):
    """No bundled config matches the name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    with CONFIG_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)


def _norm(name: str) -> str:
    return name.strip().lower().rstrip("/")


def list_models() -> list[str]:
    """Hub ids of the bundled configs."""
    return sorted(_table()["models"])


def resolve_name(name_or_hub_id: str) -> str:
    """The bundled hub id for a hub id, an alias ("qwen2.5-7b") or a unique substring; case-insensitive."""
    models, aliases = _table()["models"], _table()["aliases"]
    key = _norm(name_or_hub_id)
    by_lower = {_norm(k): k for k in models}
    alias_lower = {_norm(k): v for k, v in aliases.items()}
    if key in by_lower:
        return by_lower[key]
    if key in alias_lower:
        return alias_lower[key]
    tail = {_norm(k.split("/")[-1]): k for k in models}
    if key in tail:
        return tail[key]
    hits = [k for k in models if key in _norm(k)]
    if len(hits) == 1:
        return hits[0]
    hint = f"; several match: {', '.join(hits)}" if hits else f"; known: {', '.join(list_models())}"
    raise UnknownModel(f"no bundled config for {name_or_hub_id!r}{hint}")


def lookup_config(name_or_hub_id: str) -> dict[str, Any]:
    """A copy of the bundled config.json fields for a model (see ``resolve_name``); the ``_source``
    key says where the values were read."""
    return json.loads(json.dumps(_table()["models"][resolve_name(name_or_hub_id)]))


def load_config(path_or_name: str) -> dict[str, Any]:
    """A config from a local model folder / config.json path, else from the bundled table."""
    p = Path(path_or_name)
    if p.is_dir() and (p / "config.json").is_file():
        p = p / "config.json"
    if p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return lookup_config(path_or_name)
