"""Caption tables: an image column and a text column (``image_path,caption``), each row becoming
"user: <image> + instruction" -> "assistant: caption". The instruction is chosen by the person
(default "Describe this image."); a per-row ``question``/``prompt`` column overrides it (VQA)."""
from __future__ import annotations

from typing import Any

from studio.datasets import problems as P
from studio.datasets.canonical import Draft, Turn
from studio.datasets.formats.base import Context, image_ref, text_field

NAME = "caption"
DESCRIPTION = "Caption table: an image column + a text column (e.g. image_path, caption)"
IMAGE_COLUMNS = ("image", "image_path", "image_file", "img", "img_path", "file_name", "filename", "file", "path")
TEXT_COLUMNS = ("caption", "text", "description", "answer", "label", "alt_text")
QUESTION_COLUMNS = ("question", "prompt", "instruction")
FIELDS = ("image", "caption", "question")


def detect(keys: set[str]) -> bool:
    return _first(keys, IMAGE_COLUMNS) is not None and _first(keys, TEXT_COLUMNS) is not None


def missing(keys: set[str]) -> list[str]:
    needs = []
    if _first(keys, IMAGE_COLUMNS) is None:
        needs.append(f"an image column ({', '.join(IMAGE_COLUMNS[:3])}, ...)")
    if _first(keys, TEXT_COLUMNS) is None:
        needs.append(f"a caption column ({', '.join(TEXT_COLUMNS[:3])}, ...)")
    return needs


def _first(keys, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in keys), None)


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    keys = set(row)
    image_key = _first(keys, IMAGE_COLUMNS) or "image"
    text_key = _first(keys, TEXT_COLUMNS) or "caption"
    caption = text_field(row, text_key, ctx)
    value = row.get(image_key)
    ref = image_ref(value) if value not in (None, "") else None
    if ref is None:
        ctx.problems.add(image_key, P.MISSING_IMAGE, f"`{image_key}` is empty", "give the image's path")
    question_key = _first(keys, QUESTION_COLUMNS)
    question = (text_field(row, question_key, ctx, required=False) if question_key else None) or ctx.instruction
    if caption is None or ref is None:
        return None
    user = Turn("user", [("image", ref), ("text", question)], image_key)
    return Draft([user, Turn("assistant", [("text", caption)], text_key)])
