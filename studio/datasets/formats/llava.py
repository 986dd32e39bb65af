"""LLaVA: one ``image`` per row plus ``conversations`` (human/gpt) whose first human turn holds
the ``<image>`` placeholder. Text-only rows (no ``image``) are allowed, as in LLaVA's own mixes."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats.base import Context, image_refs, list_field, speaker_turns

NAME = "llava"
DESCRIPTION = "LLaVA: image + conversations [{from: human|gpt, value}]"
FIELDS = ("conversations", "image")


def detect(keys: set[str]) -> bool:
    return {"conversations", "image"} <= keys


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    turns = list_field(row, "conversations", ctx)
    if turns is None:
        return None
    return Draft(speaker_turns(turns, "conversations", ctx), image_refs(row.get("image"), "image", ctx),
                 images_field="image")
