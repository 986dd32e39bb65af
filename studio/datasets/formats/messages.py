"""OpenAI / Hugging Face messages: ``messages`` of ``{"role", "content"}`` where content is a
string or a list of parts (``text``, ``image``, ``image_url``); optional ``images`` list that
``<image>`` placeholders in the text refer to (LLaMA-Factory's multimodal form), or that bare
``{"type": "image"}`` parts refer to in order (the form TRL and the Qwen2.5-VL cookbook use), and
``tools``."""
from __future__ import annotations

import json
from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import Draft, Turn
from studio.datasets.canonical import IMAGE_PLACEHOLDER
from studio.datasets.formats.base import (
    ROLE_ALIASES, Context, image_ref, image_refs, list_field, missing_fields, tools_extra,
)

NAME = "messages"
DESCRIPTION = "OpenAI/HF messages: messages [{role, content}] (+ images, tools)"
FIELDS = ("messages", "images", "tools")


def detect(keys: set[str]) -> bool:
    return "messages" in keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("messages",))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    messages = list_field(row, "messages", ctx)
    if messages is None:
        return None
    turns = [t for i, m in enumerate(messages) if (t := _turn(m, f"messages[{i}]", ctx)) is not None]
    return Draft(turns, image_refs(row.get("images"), "images", ctx), extra=tools_extra(row))


def _turn(message: Any, where: str, ctx: Context) -> Turn | None:
    if not isinstance(message, dict):
        ctx.problems.add(where, P.BAD_VALUE, f"message is a {type(message).__name__}, not an object",
                         'each message is {"role": "user", "content": "..."}')
        return None
    raw_role = message.get("role")
    role = ROLE_ALIASES.get(str(raw_role).lower())
    if role is None:
        ctx.problems.add(f"{where}.role", P.UNKNOWN_ROLE, f"message has role {raw_role!r}",
                         "use system, user or assistant")
        role = str(raw_role)
    content = message.get("content")
    if content in (None, "") and message.get("tool_calls"):
        content = json.dumps(message["tool_calls"], ensure_ascii=False)
    return Turn(role, _parts(content, f"{where}.content", ctx), f"{where}.content")


def _parts(content: Any, where: str, ctx: Context) -> list[tuple[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [("text", content)]
    if not isinstance(content, list):
        ctx.problems.add(where, P.BAD_VALUE, f"content is a {type(content).__name__}",
                         "content is a string or a list of parts")
        return []
    return [p for i, part in enumerate(content) if (p := _part(part, f"{where}[{i}]", ctx)) is not None]


def _part(part: Any, where: str, ctx: Context) -> tuple[str, Any] | None:
    if isinstance(part, str):
        return ("text", part)
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
        return ("text", part["text"])
    if kind == "image" and _bare(part):
        # no path of its own: it stands for the next entry of the row's `images`, like a placeholder
        return ("text", IMAGE_PLACEHOLDER)
    if kind in ("image", "image_url", "input_image"):
        value = part.get("image_url", part.get("image", part))
        if isinstance(value, dict) and "url" in value and "bytes" not in value:
            value = value["url"]
        ref = image_ref(value)
        if ref is not None:
            return ("image", ref)
    ctx.problems.add(where, P.BAD_VALUE, f"content part {_short(part)} is not a text or image part",
                     'use {"type": "text", "text": ...} or {"type": "image", "image": "path"}')
    return None


def _bare(part: dict[str, Any]) -> bool:
    """``{"type": "image"}`` (Parquet exports add ``"image": None, "text": None``)."""
    return all(part.get(k) in (None, "") for k in ("image", "image_url", "path", "url", "bytes"))


def _short(value: Any) -> str:
    text = repr(value)  # a part may be large: show its start only
    return text if len(text) <= 80 else text[:77] + "..."
