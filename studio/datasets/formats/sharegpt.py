"""ShareGPT: ``conversations`` of ``{"from", "value"}`` turns (human/gpt/system/function_call/
observation), optional ``system``, ``tools`` and ``images`` (with ``<image>`` placeholders)."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats.base import (
    Context, image_refs, list_field, missing_fields, speaker_turns, system_turn, tools_extra,
)

NAME = "sharegpt"
DESCRIPTION = "ShareGPT: conversations [{from, value}] (+ system, tools, images)"
FIELDS = ("conversations", "system", "tools", "images")


def detect(keys: set[str]) -> bool:
    return "conversations" in keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("conversations",))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    turns = list_field(row, "conversations", ctx)
    if turns is None:
        return None
    body = speaker_turns(turns, "conversations", ctx)
    if body and body[0].role == "system":
        system = []
    else:
        system = system_turn(row, ctx)
    return Draft(system + body, image_refs(row.get("images"), "images", ctx), extra=tools_extra(row))
