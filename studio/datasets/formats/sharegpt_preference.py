"""LLaMA-Factory's ShareGPT preference form: ``conversations`` (the prompt, ending with the human
turn) plus ``chosen`` and ``rejected`` assistant turns ``{"from": "gpt", "value": ...}``; optional
``system``, ``tools``, ``images`` (with ``<image>`` placeholders)."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats.base import (
    Context, image_refs, list_field, missing_fields, speaker_turns, system_turn, tools_extra,
)
from studio.datasets.preference import PREFERENCE, answer_turns

NAME = "sharegpt_preference"
KIND = PREFERENCE
DESCRIPTION = "ShareGPT preference (LLaMA-Factory): conversations + chosen / rejected (+ system, tools, images)"
FIELDS = ("conversations", "chosen", "rejected", "system", "tools", "images")


def detect(keys: set[str]) -> bool:
    return {"conversations", "chosen", "rejected"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("conversations", "chosen", "rejected"))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    turns = list_field(row, "conversations", ctx)
    chosen = answer_turns(row.get("chosen"), "chosen", ctx)
    rejected = answer_turns(row.get("rejected"), "rejected", ctx)
    if turns is None or chosen is None or rejected is None:
        return None
    prompt = speaker_turns(turns, "conversations", ctx)
    if not prompt or prompt[0].role != "system":
        prompt = system_turn(row, ctx) + prompt
    return Draft(prompt, image_refs(row.get("images"), "images", ctx), extra=tools_extra(row), kind=KIND,
                 branches={"chosen": chosen, "rejected": rejected})
