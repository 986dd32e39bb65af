"""Preference and KTO rows: the canonical form, and the checks their converters share.

A dataset holds one kind of row (``Dataset.kind``):

- ``sft``: ``{"messages": [... ending with the assistant reply]}`` (``studio.datasets.canonical``)
- ``preference``: ``{"kind": "preference", "messages": [prompt turns, ending with the user],
  "chosen": [assistant message], "rejected": [assistant message]}``
- ``kto``: ``{"kind": "kto", "messages": [prompt turns], "completion": [assistant message],
  "label": true|false}``

These are TRL's conversational preference / unpaired-preference forms with ``messages`` as the
prompt, so a row becomes a trainer example by renaming one key (``trainer_example``). Images belong
to the prompt (Qwen2.5-VL: the picture the answers talk about); answers are text.
"""
from __future__ import annotations

import re
from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import ROLES, Draft, Turn, is_empty
from studio.datasets.problems import RowProblems

SFT, PREFERENCE, KTO = "sft", "preference", "kto"
KINDS = (SFT, PREFERENCE, KTO)
BRANCHES = {PREFERENCE: ("chosen", "rejected"), KTO: ("completion",)}
KIND_WORDS = {SFT: "instruction (SFT) rows", PREFERENCE: "preference pairs (chosen/rejected)",
              KTO: "KTO rows (completion + label)"}


def row_kind(row: dict[str, Any]) -> str:
    return row.get("kind", SFT)


def branch_messages(row: dict[str, Any], branch: str) -> list[dict[str, Any]]:
    """The prompt followed by one answer (``chosen``, ``rejected``, ``completion``) as one chat."""
    return row["messages"] + row[branch]


def all_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message of a row of any kind (for image paths and counts)."""
    return row["messages"] + [m for b in BRANCHES.get(row_kind(row), ()) for m in row.get(b, [])]


def trainer_example(row: dict[str, Any]) -> dict[str, Any]:
    """The row in TRL's conversational form: ``prompt`` + ``chosen``/``rejected`` (or
    ``completion``/``label``)."""
    out = {"prompt": row["messages"], **{b: row[b] for b in BRANCHES[row_kind(row)]}}
    if row_kind(row) == KTO:
        out["label"] = bool(row["label"])
    return out


def text_of(turns: list[Turn]) -> str:
    return "\n".join(str(v) for t in turns for kind, v in t.parts if kind == "text").strip()


# -- checks ---------------------------------------------------------------------------------------------
def check_prompt(turns: list[Turn], probs: RowProblems, where: str = "prompt") -> None:
    """Optional system, then user/assistant alternating, ending with the user (the answers follow)."""
    roles = [t.role for t in turns]
    body = roles[1:] if roles and roles[0] == "system" else roles
    if not body:
        probs.add(where, P.MISSING_FIELD, "the row has no prompt (no user turn before the answers)",
                  "give every pair the question both answers reply to")
        return
    for i, t in enumerate(turns, 1):
        if t.role in ROLES and is_empty(t):
            probs.add(t.field or where, P.EMPTY_TURN, f"prompt turn {i} ({t.role}) is empty",
                      "write the text of this turn or remove it")
    if not all(r in ROLES for r in roles):
        return  # the converter named the unknown role
    offset = len(roles) - len(body)
    for i, got in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if got != want:
            probs.add(turns[i + offset].field or where, P.ROLE_ORDER,
                      f"prompt turn {i + offset + 1} is {got!r} but should be {want!r} (roles: {', '.join(roles)})",
                      "the prompt alternates user/assistant after an optional system message")
            return
    if body[-1] != "user":
        probs.add(turns[-1].field or where, P.ROLE_ORDER, f"the prompt ends with {body[-1]!r}, not the user",
                  "the prompt is everything before the answers; it ends with the user's question")


def check_answer(turns: list[Turn], key: str, probs: RowProblems) -> None:
    """One non-empty assistant message, text only."""
    if not turns:
        probs.add(key, P.MISSING_FIELD, f"`{key}` has no answer", f"give `{key}` the assistant's reply")
        return
    if len(turns) != 1 or turns[0].role != "assistant":
        roles = ", ".join(t.role for t in turns)
        probs.add(key, P.ROLE_ORDER, f"`{key}` must be one assistant reply, got turns: {roles}",
                  "put earlier turns into the prompt; the answer is the last assistant message only")
        return
    if is_empty(turns[0]):
        probs.add(turns[0].field or key, P.EMPTY_TURN, f"`{key}` is empty", f"write the {key} answer")
    if any(kind == "image" for kind, _ in turns[0].parts):
        probs.add(turns[0].field or key, P.BAD_VALUE, f"`{key}` holds an image; answers are text",
                  "put images into the prompt")


def check_draft(draft: Draft, probs: RowProblems) -> None:
    """The checks of a preference or KTO draft (SFT drafts go through ``canonical.check_turns``)."""
    check_prompt(draft.turns, probs)
    for key in BRANCHES[draft.kind]:
        check_answer(draft.branches.get(key, []), key, probs)
    if draft.kind == PREFERENCE and not probs:
        chosen, rejected = text_of(draft.branches["chosen"]), text_of(draft.branches["rejected"])
        if chosen == rejected:
            probs.add("rejected", P.SAME_ANSWERS, "`chosen` and `rejected` are the same text",
                      "a pair teaches nothing when both answers are equal: remove the row or fix one answer")


# -- transcripts: one conversation per answer ----------------------------------------------------------
def split_transcripts(chosen: list[Turn], rejected: list[Turn], probs: RowProblems
                      ) -> tuple[list[Turn], list[Turn], list[Turn]] | None:
    """HH-RLHF style: two whole conversations that share their beginning. The shared turns are the
    prompt; what follows in each is its answer. ``None`` (with a problem) when they share nothing."""
    shared = 0
    for c, r in zip(chosen, rejected):
        if c.role != r.role or text_of([c]) != text_of([r]) or [k for k, _ in c.parts] != [k for k, _ in r.parts]:
            break
        shared += 1
    # the answers start at the last assistant turn: equal final answers are a problem, not a longer prompt
    while shared and (shared >= len(chosen) or shared >= len(rejected) or chosen[shared - 1].role != "user"):
        shared -= 1
    if shared == 0:
        probs.add("chosen", P.MISSING_FIELD, "`chosen` and `rejected` share no prompt (their first turns differ)",
                  "both transcripts must start with the same user turn(s); or give a separate `prompt` field")
        return None
    return chosen[:shared], chosen[shared:], rejected[shared:]


_HH_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant|H|A|User|System):[ \t]?", re.IGNORECASE)
_HH_ROLES = {"human": "user", "h": "user", "user": "user", "assistant": "assistant", "a": "assistant",
             "system": "system"}


def parse_hh_transcript(text: str, key: str, probs: RowProblems) -> list[Turn]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: hello"`` -> turns; text before the first speaker is an error."""
    pieces = _HH_SPEAKER.split(text)
    head, rest = pieces[0], pieces[1:]
    if not rest:
        probs.add(key, P.BAD_VALUE, f"`{key}` has no 'Human:' / 'Assistant:' turns",
                  "HH-RLHF transcripts read '\\n\\nHuman: ...\\n\\nAssistant: ...'; or give `prompt` separately")
        return []
    if head.strip():
        probs.add(key, P.BAD_VALUE, f"`{key}` starts with text before the first 'Human:' turn",
                  "begin the transcript with 'Human:'")
    return [Turn(_HH_ROLES[speaker.lower()], [("text", body.strip())], key)
            for speaker, body in zip(rest[::2], rest[1::2])]


def answer_turns(value: Any, key: str, ctx: Any) -> list[Turn] | None:
    """An answer as rows write it: text, one message object (``{"role"|"from", "content"|"value"}``),
    or a list of messages (conversational form, possibly the whole conversation)."""
    from studio.datasets.formats.base import json_list, speaker_turns
    from studio.datasets.formats.messages import _turn

    value = json_list(value.tolist() if hasattr(value, "tolist") else value)
    if value is None:
        ctx.problems.add(key, P.MISSING_FIELD, f"field `{key}` is missing", f"every row needs `{key}`")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        return [Turn("assistant", [("text", value)], key)]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        ctx.problems.add(key, P.BAD_VALUE, f"`{key}` is a {type(value).__name__}, expected text or messages", "")
        return None
    if all(isinstance(m, dict) and ("from" in m or "value" in m) for m in value):
        return speaker_turns(value, key, ctx)
    return [t for i, m in enumerate(value) if (t := _turn(m, f"{key}[{i}]", ctx)) is not None]


def prompt_turns(value: Any, key: str, ctx: Any) -> list[Turn] | None:
    """A prompt: text (one user turn) or a list of messages."""
    turns = answer_turns(value, key, ctx)
    if turns is not None and isinstance(value, str):
        turns[0].role = "user"
    return turns


def join_prompt(prompt: list[Turn], answers: dict[str, list[Turn]], probs: RowProblems
                ) -> tuple[list[Turn], dict[str, list[Turn]]] | None:
    """UltraFeedback-binarized writes ``chosen``/``rejected`` as the whole conversation (the prompt's
    user turn included) beside a ``prompt`` string: take the shared beginning as the prompt, and check
    it ends with the given prompt's text."""
    if not any(t.role != "assistant" for turns in answers.values() for t in turns):
        return prompt, answers
    if set(answers) != {"chosen", "rejected"}:
        key = next(iter(answers))
        return prompt, {key: answers[key][-1:]} if _ends_with(answers[key][:-1], prompt) else answers
    split = split_transcripts(answers["chosen"], answers["rejected"], probs)
    if split is None:
        return None
    shared, chosen, rejected = split
    if prompt and not _ends_with(shared, prompt):
        probs.add("prompt", P.BAD_VALUE, "`prompt` differs from the conversation that `chosen` and `rejected` "
                  "continue", "make `prompt` the user turn(s) the answers reply to")
        return None
    return shared, {"chosen": chosen, "rejected": rejected}


def _ends_with(turns: list[Turn], prompt: list[Turn]) -> bool:
    tail = turns[-len(prompt):] if prompt else []
    return len(tail) == len(prompt) and all(text_of([a]) == text_of([b]) for a, b in zip(tail, prompt))


def label_value(value: Any, probs: RowProblems, key: str = "label") -> bool | None:
    """KTO's desirable/undesirable flag: true/false, 1/0, or the words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    probs.add(key, P.BAD_VALUE if value is not None else P.MISSING_FIELD,
              f"`{key}` is {value!r}, expected true or false",
              "label each completion true (desirable) or false (undesirable)")
    return None
