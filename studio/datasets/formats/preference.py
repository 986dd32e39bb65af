"""Preference pairs: ``prompt`` / ``chosen`` / ``rejected`` (TRL's preference form). Each is text or
a list of messages; UltraFeedback-binarized writes ``chosen``/``rejected`` as the whole conversation
(the prompt's user turn included), which is split at the shared beginning. Optional ``system``,
``images`` (with ``<image>`` placeholders in the prompt, or shown before it)."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats.base import Context, image_refs, missing_fields, system_turn
from studio.datasets.preference import PREFERENCE, answer_turns, join_prompt, prompt_turns
from studio.datasets.formats.alpaca import place_images

NAME = "preference"
KIND = PREFERENCE
DESCRIPTION = "Preference pairs: prompt / chosen / rejected, text or messages (+ system, images)"
FIELDS = ("prompt", "chosen", "rejected", "system", "images")


def detect(keys: set[str]) -> bool:
    return {"prompt", "chosen", "rejected"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("prompt", "chosen", "rejected"))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    prompt = prompt_turns(row.get("prompt"), "prompt", ctx)
    chosen = answer_turns(row.get("chosen"), "chosen", ctx)
    rejected = answer_turns(row.get("rejected"), "rejected", ctx)
    if prompt is None or chosen is None or rejected is None:
        return None
    joined = join_prompt(prompt, {"chosen": chosen, "rejected": rejected}, ctx.problems)
    if joined is None:
        return None
    turns, answers = joined
    turns, images = with_system_and_images(row, turns, ctx)
    return Draft(turns, images, kind=KIND, branches=answers)


def with_system_and_images(row: dict[str, Any], turns: list, ctx: Context) -> tuple[list, list]:
    """The row's ``system`` before the prompt (unless it has one) and its ``images`` placed in it."""
    if not turns or turns[0].role != "system":
        turns = system_turn(row, ctx) + turns
    images = image_refs(row.get("images"), "images", ctx)
    place_images(turns, images)
    return turns, images
