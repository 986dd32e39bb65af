"""Alpaca: ``instruction`` (+ optional ``input``) -> ``output``, with optional ``system``,
``history`` (earlier ``[question, answer]`` pairs) and ``images`` (or ``image``: one path or a
list). Images go where ``<image>`` placeholders stand; a row without any placeholder shows its
images before the instruction (a visual instruction set written as Alpaca keeps its images)."""
from __future__ import annotations

from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import IMAGE_PLACEHOLDER, Draft, Turn
from studio.datasets.formats.base import Context, image_refs, list_field, missing_fields, system_turn, text_field

NAME = "alpaca"
DESCRIPTION = "Alpaca: instruction / input / output (+ system, history, images)"
FIELDS = ("instruction", "output", "input", "system", "history", "images", "image")


def detect(keys: set[str]) -> bool:
    return {"instruction", "output"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("instruction", "output"))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    instruction = text_field(row, "instruction", ctx)
    output = text_field(row, "output", ctx)
    extra_input = text_field(row, "input", ctx, required=False)
    turns = system_turn(row, ctx) + _history(row, ctx)
    images_key = "images" if row.get("images") not in (None, "", []) else "image"
    images = image_refs(row.get(images_key), images_key, ctx)
    if instruction is None or output is None:
        return None
    prompt = "\n".join(s for s in (instruction, extra_input) if s)
    user = Turn("user", [("text", prompt)], "instruction")
    turns += [user, Turn("assistant", [("text", output)], "output")]
    place_images(turns, images)
    return Draft(turns, images, images_field=images_key)


def place_images(turns: list[Turn], images: list) -> None:
    """Rows without any ``<image>`` placeholder show their images before the last user turn's text."""
    users = [t for t in turns if t.role == "user"]
    if images and users and not _has_placeholder(turns):
        users[-1].parts = [("text", IMAGE_PLACEHOLDER * len(images))] + users[-1].parts


def _has_placeholder(turns: list[Turn]) -> bool:
    return any(kind == "text" and IMAGE_PLACEHOLDER in value for t in turns for kind, value in t.parts)


def _history(row: dict[str, Any], ctx: Context) -> list[Turn]:
    pairs = list_field(row, "history", ctx, required=False) or []
    turns = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            ctx.problems.add(f"history[{i}]", P.BAD_VALUE, f"history entry {i + 1} is not a [question, answer] pair",
                             'write history as [["question", "answer"], ...]')
            continue
        turns += [Turn("user", [("text", pair[0])], f"history[{i}][0]"),
                  Turn("assistant", [("text", pair[1])], f"history[{i}][1]")]
    return turns
