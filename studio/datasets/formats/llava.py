"""LLaVA: one ``image`` per row plus ``conversations`` (human/gpt) whose first human turn holds
the ``<image>`` placeholder (``image`` may also be a list, as in lmms-finetune); optional
``system_prompt``. Text-only rows (no ``image``) are allowed, as in LLaVA's own mixes."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats.base import Context, image_refs, list_field, missing_fields, speaker_turns, system_turn

NAME = "llava"
DESCRIPTION = "LLaVA: image + conversations [{from: human|gpt, value}]"
FIELDS = ("conversations", "image", "system_prompt")


def detect(keys: set[str]) -> bool:
    return {"conversations", "image"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("conversations",))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    turns = list_field(row, "conversations", ctx)
    if turns is None:
        return None
    body = speaker_turns(turns, "conversations", ctx)
    system = [] if body and body[0].role == "system" else system_turn(row, ctx, "system_prompt")
    return Draft(system + body, image_refs(row.get("image"), "image", ctx), images_field="image")
