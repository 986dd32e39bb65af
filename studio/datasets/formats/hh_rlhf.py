"""HH-RLHF: ``chosen`` and ``rejected`` are whole conversations that share their beginning, as text
(``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) or as message lists. The shared turns are the prompt,
the differing last assistant turns the answers."""
from __future__ import annotations

from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import Draft
from studio.datasets.formats.base import Context, missing_fields
from studio.datasets.preference import PREFERENCE, answer_turns, parse_hh_transcript, split_transcripts

NAME = "hh_rlhf"
KIND = PREFERENCE
DESCRIPTION = "HH-RLHF: chosen / rejected full transcripts (Human:/Assistant: text, or messages)"
FIELDS = ("chosen", "rejected")


def detect(keys: set[str]) -> bool:
    return {"chosen", "rejected"} <= keys


def missing(keys: set[str]) -> list[str]:
    return missing_fields(keys, ("chosen", "rejected"))


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    chosen, rejected = _transcript(row, "chosen", ctx), _transcript(row, "rejected", ctx)
    if not chosen or not rejected:
        return None
    split = split_transcripts(chosen, rejected, ctx.problems)
    if split is None:
        return None
    prompt, chosen_answer, rejected_answer = split
    return Draft(prompt, kind=KIND, branches={"chosen": chosen_answer, "rejected": rejected_answer})


def _transcript(row: dict[str, Any], key: str, ctx: Context):
    value = row.get(key)
    if isinstance(value, str):
        return parse_hh_transcript(value, key, ctx.problems)
    turns = answer_turns(value, key, ctx)
    if turns is not None and len(turns) < 2:
        ctx.problems.add(key, P.MISSING_FIELD, f"`{key}` is one message, not a conversation with its prompt",
                         "give the whole conversation, or add a `prompt` field (prompt/chosen/rejected form)")
        return None
    return turns
