"""KTO (unpaired preferences, TRL's form): ``prompt`` / ``completion`` / ``label`` (true: a desirable
completion, false: an undesirable one). Prompt and completion are text or message lists; optional
``system`` and ``images``."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats.base import Context, missing_fields
from studio.datasets.formats.preference import with_system_and_images
from studio.datasets.preference import KTO, answer_turns, join_prompt, label_value, prompt_turns

NAME = "kto"
KIND = KTO
DESCRIPTION = "KTO: prompt / completion / label true|false (+ system, images)"
FIELDS = ("prompt", "completion", "label", "system", "images")


def detect(keys: set[str]) -> bool:
    return {"prompt", "completion", "label"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("prompt", "completion", "label"))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    prompt = prompt_turns(row.get("prompt"), "prompt", ctx)
    completion = answer_turns(row.get("completion"), "completion", ctx)
    label = label_value(row.get("label"), ctx.problems)
    if prompt is None or completion is None or label is None:
        return None
    joined = join_prompt(prompt, {"completion": completion}, ctx.problems)
    if joined is None:
        return None
    turns, answers = joined
    turns, images = with_system_and_images(row, turns, ctx)
    return Draft(turns, images, extra={"label": label}, kind=KIND, branches=answers)
