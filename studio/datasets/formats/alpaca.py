"""Alpaca: ``instruction`` (+ optional ``input``) -> ``output``, with optional ``system``,
``history`` (earlier ``[question, answer]`` pairs) and ``images`` (with ``<image>`` placeholders)."""
from __future__ import annotations

from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import Draft, Turn
from studio.datasets.formats.base import Context, image_refs, list_field, system_turn, text_field

NAME = "alpaca"
DESCRIPTION = "Alpaca: instruction / input / output (+ system, history)"
FIELDS = ("instruction", "output", "input", "system", "history", "images")


def detect(keys: set[str]) -> bool:
    return {"instruction", "output"} <= keys


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    instruction = text_field(row, "instruction", ctx)
    output = text_field(row, "output", ctx)
    extra_input = text_field(row, "input", ctx, required=False)
    turns = system_turn(row, ctx) + _history(row, ctx)
    if instruction is None or output is None:
        return None
    prompt = "\n".join(s for s in (instruction, extra_input) if s)
    turns += [Turn("user", [("text", prompt)], "instruction"), Turn("assistant", [("text", output)], "output")]
    return Draft(turns, image_refs(row.get("images"), "images", ctx))


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
