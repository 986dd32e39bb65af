"""The common shape of a format module, and helpers they share.

Every format module defines ``NAME``, ``DESCRIPTION``, ``FIELDS`` (the fields it reads: required
first, used by the "unknown format" message and the column-mapping form), ``detect(keys)``,
``missing(keys)`` (the required fields absent from ``keys``, in words) and
``convert(row, ctx) -> Draft | None``. ``convert`` never raises on bad data: it records problems in
``ctx.problems`` and returns ``None`` when the row is unusable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from studio.datasets import problems as P
from studio.datasets.canonical import Draft, ImageRef, Turn
from studio.datasets.problems import RowProblems
from studio.datasets.values import parse_int

# ShareGPT-style speaker names -> canonical roles. Tool calls are assistant output; tool results
# (observations) come back in the user's position, which keeps the user/assistant alternation the
# chat templates expect.
ROLE_ALIASES = {
    "system": "system",
    "human": "user", "user": "user", "observation": "user", "tool": "user", "function": "user",
    "ipython": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "bot": "assistant",
    "chatgpt": "assistant", "function_call": "assistant",
}


class Format(Protocol):
    NAME: str
    DESCRIPTION: str
    FIELDS: tuple[str, ...]

    def detect(self, keys: set[str]) -> bool: ...

    def missing(self, keys: set[str]) -> list[str]: ...

    def convert(self, row: dict[str, Any], ctx: "Context") -> Draft | None: ...


@dataclass
class Context:
    """What a converter needs besides the row: where to record problems, and the options."""

    problems: RowProblems
    instruction: str


def text_field(row: dict[str, Any], key: str, ctx: Context, required: bool = True) -> str | None:
    """A string field; numbers are accepted as text, anything else is a problem."""
    value = row.get(key)
    if value is None:
        if required:
            ctx.problems.add(key, P.MISSING_FIELD, f"field `{key}` is missing", f"every row needs `{key}`")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        ctx.problems.add(key, P.BAD_VALUE, f"`{key}` is a {type(value).__name__}, expected text", "")
        return None
    return value


def list_field(row: dict[str, Any], key: str, ctx: Context, required: bool = True) -> list[Any] | None:
    value = row.get(key)
    if value is None:
        if required:
            ctx.problems.add(key, P.MISSING_FIELD, f"field `{key}` is missing", f"every row needs a `{key}` list")
        return None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet readers
        value = value.tolist()
    value = json_list(value)
    if not isinstance(value, list):
        ctx.problems.add(key, P.BAD_VALUE, f"`{key}` is a {type(value).__name__}, expected a list", "")
        return None
    return value


# Media the studio cannot train on: a row that names them is refused rather than imported without
# them (a model trained on the text alone would learn to answer about videos it never saw).
UNSUPPORTED_MEDIA = ("videos", "video", "audios", "audio")


def refuse_unsupported_media(row: dict[str, Any], ctx: Context) -> None:
    for key in UNSUPPORTED_MEDIA:
        if row.get(key) not in (None, "", []):
            ctx.problems.add(key, P.BAD_VALUE, f"row has `{key}`; only text and images can be trained on",
                             "leave out the rows with videos or audio (or turn videos into image frames)")


def json_list(value: Any) -> Any:
    """A list written as JSON text in a table cell (CSV exports of chat data) becomes the list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value, parse_int=parse_int)
        except (ValueError, RecursionError):
            return value
        return parsed if isinstance(parsed, list) else value
    return value


def missing_fields(keys: set[str], required: tuple[str, ...]) -> list[str]:
    return [f"`{f}`" for f in required if f not in keys]


def image_refs(value: Any, key: str, ctx: Context) -> list[ImageRef]:
    """``images``: a list (or one) of paths, or Hugging Face image structs ``{"bytes", "path"}``."""
    if value is None or value == "" or value == []:
        return []
    value = json_list(value)
    items = value if isinstance(value, list) else [value]
    refs = []
    for i, item in enumerate(items):
        ref = image_ref(item)
        if ref is None:
            ctx.problems.add(f"{key}[{i}]", P.BAD_VALUE, f"image entry is a {type(item).__name__}",
                             "give a path string (or {\"path\": ...} / {\"bytes\": ...})")
        else:
            refs.append(ref)
    return refs


def image_ref(item: Any) -> ImageRef | None:
    if isinstance(item, str):
        return ImageRef(path=item)
    if isinstance(item, dict):
        if item.get("bytes"):
            return ImageRef(path=item.get("path"), data=bytes(item["bytes"]))
        for key in ("path", "image", "url"):
            if isinstance(item.get(key), str):
                return ImageRef(path=item[key])
    if isinstance(item, (bytes, bytearray)):
        return ImageRef(data=bytes(item))
    return None


def speaker_turns(turns: list[Any], key: str, ctx: Context) -> list[Turn]:
    """ShareGPT/LLaVA turns: ``{"from", "value"}`` (or ``{"role", "content"}``) objects."""
    out = []
    for i, t in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(t, dict):
            ctx.problems.add(where, P.BAD_VALUE, f"turn {i + 1} is a {type(t).__name__}, not an object",
                             'each turn is {"from": "human", "value": "..."}')
            continue
        speaker = t.get("from", t.get("role"))
        value = t.get("value", t.get("content"))
        role = ROLE_ALIASES.get(str(speaker).lower())
        if role is None:
            ctx.problems.add(f"{where}.from", P.UNKNOWN_ROLE, f"turn {i + 1} has speaker {speaker!r}",
                             f"use one of {', '.join(sorted(ROLE_ALIASES))}")
            role = str(speaker)
        if not isinstance(value, str):
            value = "" if value is None else json.dumps(value, ensure_ascii=False)
        out.append(Turn(role, [("text", value)], f"{where}.value"))
    return out


def system_turn(row: dict[str, Any], ctx: Context, key: str = "system") -> list[Turn]:
    text = text_field(row, key, ctx, required=False)
    return [Turn("system", [("text", text)], key)] if text and text.strip() else []


def tools_extra(row: dict[str, Any]) -> dict[str, Any]:
    """Keep function definitions (``tools``) for chat templates; parse them if stored as a string."""
    tools = row.get("tools")
    if tools in (None, "", "[]", []):
        return {}
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            return {"tools": tools}
    return {"tools": tools}
