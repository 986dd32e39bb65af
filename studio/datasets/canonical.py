"""The one canonical row form, and the checks every importer shares.

A row is ``{"messages": [{"role": ..., "content": [{"type": "text", "text": ...},
{"type": "image", "image": "images/<sha256>.<ext>"}]}]}`` (the Hugging Face chat-template form),
optionally with ``"tools"`` (function-calling data). Format converters produce a ``Draft`` whose
images are still references into the upload; this module binds ``<image>`` placeholders to them,
checks role order and empty turns, and serialises the finished row.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from studio.datasets import problems as P
from studio.datasets.problems import RowProblems

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("system", "user", "assistant")
_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_PLACEHOLDER))


@dataclass(frozen=True)
class ImageRef:
    """An image as a row names it: a path (relative to the data file's folder) or inline bytes."""

    path: str | None = None
    data: bytes | None = None

    @property
    def label(self) -> str:
        return self.path or "<inline image>"


@dataclass
class Turn:
    """One message. ``parts`` are ``("text", str)`` or ``("image", ImageRef)``; ``field`` names where
    the turn came from in the input row (``conversations[2].value``) for messages."""

    role: str
    parts: list[tuple[str, Any]]
    field: str = ""


@dataclass
class Draft:
    """A converted row before images are stored: ``images`` are the row-level list that
    ``<image>`` placeholders in text parts refer to, in order."""

    turns: list[Turn]
    images: list[ImageRef] = field(default_factory=list)
    images_field: str = "images"
    extra: dict[str, Any] = field(default_factory=dict)
    # preference / KTO rows (``studio.datasets.preference``): ``turns`` are the prompt, and the
    # answers are ``branches`` ("chosen"/"rejected", or "completion" with a "label" in ``extra``)
    kind: str = "sft"
    branches: dict[str, list[Turn]] = field(default_factory=dict)


def bind_placeholders(draft: Draft, probs: RowProblems) -> None:
    """Replace each ``<image>`` in text parts with the next image of ``draft.images``."""
    count = sum(text.count(IMAGE_PLACEHOLDER) for t in draft.turns for kind, text in t.parts if kind == "text")
    if count != len(draft.images):
        _placeholder_problem(count, len(draft.images), draft.images_field, probs)
        return
    if not count:
        return
    images = iter(draft.images)
    for turn in draft.turns:
        turn.parts = [p for kind, value in turn.parts for p in _split(kind, value, images)]


def _split(kind: str, value: Any, images: Iterator[ImageRef]) -> list[tuple[str, Any]]:
    if kind != "text" or IMAGE_PLACEHOLDER not in value:
        return [(kind, value)]
    out: list[tuple[str, Any]] = []
    for i, piece in enumerate(_PLACEHOLDER_RE.split(value)):
        if i:
            out.append(("image", next(images)))
        if piece.strip():
            out.append(("text", piece.strip()))
    return out


def _placeholder_problem(placeholders: int, images: int, field_name: str, probs: RowProblems) -> None:
    if placeholders > images:
        hint = f"add the missing image path to `{field_name}` or remove a placeholder"
    else:
        hint = f"put an {IMAGE_PLACEHOLDER} placeholder where each image belongs, or remove the extra path from `{field_name}`"
    probs.add(field_name, P.PLACEHOLDER_MISMATCH,
              f"{_n(placeholders, IMAGE_PLACEHOLDER + ' placeholder')} but {_n(images, 'image')}", hint)


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def check_turns(turns: list[Turn], probs: RowProblems) -> None:
    """Empty turns and order (converters report unknown roles, keeping the raw name): optional system, then user/assistant alternating,
    ending with assistant (the reply the model learns)."""
    if not turns:
        probs.add("messages", P.EMPTY_TURN, "row has no messages", "give every row a user turn and an assistant reply")
        return
    for i, t in enumerate(turns, 1):
        if t.role in ROLES and is_empty(t):
            probs.add(t.field or None, P.EMPTY_TURN, f"turn {i} ({t.role}) is empty",
                      "write the text of this turn or remove the turn")
    if all(t.role in ROLES for t in turns):  # unknown roles were reported by the converter
        _check_order(turns, probs)


def is_empty(turn: Turn) -> bool:
    return not any(kind == "image" or (kind == "text" and str(value).strip()) for kind, value in turn.parts)


def _check_order(turns: list[Turn], probs: RowProblems) -> None:
    roles = [t.role for t in turns]
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
    offset = len(roles) - len(body)
    for i, (got, want) in enumerate(zip(body, expected)):
        if got != want:
            where = turns[i + offset].field or None
            probs.add(where, P.ROLE_ORDER,
                      f"turn {i + offset + 1} is {got!r} but should be {want!r} (roles: {', '.join(roles)})",
                      "turns must alternate user/assistant after an optional system message")
            return
    if not body:
        probs.add("messages", P.ROLE_ORDER, "row has only a system message", "add a user turn and an assistant reply")
    elif body[-1] != "assistant":
        probs.add(turns[-1].field or None, P.ROLE_ORDER,
                  f"last turn is {body[-1]!r} (roles: {', '.join(roles)})",
                  "end each row with the assistant reply the model should learn, or drop the last turn")


# -- serialised rows -------------------------------------------------------------------------------
def text_part(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def image_part(stored: str) -> dict[str, str]:
    return {"type": "image", "image": stored}


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def row_images(row: dict[str, Any]) -> list[str]:
    """Stored image names of a canonical row, in order of appearance."""
    return [p["image"] for m in row["messages"] for p in m["content"] if p.get("type") == "image"]


def row_turns(row: dict[str, Any]) -> int:
    return sum(1 for m in row["messages"] if m["role"] != "system")
