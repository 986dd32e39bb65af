"""LLaMA-Factory's Alpaca preference ("ranking") form: ``instruction`` (+ ``input``) with ``chosen``
and ``rejected`` answers, or with ``output`` as the list ``[chosen, rejected]`` (its older form);
optional ``system``, ``history``, ``images``."""
from __future__ import annotations

from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import Draft, Turn
from studio.datasets.formats.alpaca import _history, place_images
from studio.datasets.formats.base import Context, image_refs, json_list, missing_fields, system_turn, text_field
from studio.datasets.preference import PREFERENCE

NAME = "alpaca_ranking"
KIND = PREFERENCE
DESCRIPTION = "Alpaca ranking (LLaMA-Factory): instruction / input + chosen / rejected, or output [chosen, rejected]"
FIELDS = ("instruction", "chosen", "rejected", "input", "output", "system", "history", "images")


def detect(keys: set[str]) -> bool:
    return {"instruction", "chosen", "rejected"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("instruction", "chosen", "rejected"))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    instruction = text_field(row, "instruction", ctx)
    extra_input = text_field(row, "input", ctx, required=False)
    answers = _answers(row, ctx)
    turns = system_turn(row, ctx) + _history(row, ctx)
    images = image_refs(row.get("images"), "images", ctx)
    if instruction is None or answers is None:
        return None
    turns.append(Turn("user", [("text", "\n".join(s for s in (instruction, extra_input) if s))], "instruction"))
    place_images(turns, images)
    chosen, rejected = answers
    return Draft(turns, images, kind=KIND, branches={"chosen": [Turn("assistant", [("text", chosen[1])], chosen[0])],
                                                     "rejected": [Turn("assistant", [("text", rejected[1])],
                                                                       rejected[0])]})


def _answers(row: dict[str, Any], ctx: Context) -> tuple[tuple[str, str], tuple[str, str]] | None:
    if "chosen" in row or "rejected" in row or not isinstance(json_list(row.get("output")), list):
        chosen, rejected = text_field(row, "chosen", ctx), text_field(row, "rejected", ctx)
        return None if chosen is None or rejected is None else (("chosen", chosen), ("rejected", rejected))
    ranked = json_list(row["output"])
    if len(ranked) != 2 or not all(isinstance(a, str) for a in ranked):
        ctx.problems.add("output", P.BAD_VALUE, f"`output` holds {len(ranked)} entries, expected [chosen, rejected]",
                         'write "output": ["the better answer", "the worse answer"]')
        return None
    return ("output[0]", ranked[0]), ("output[1]", ranked[1])
