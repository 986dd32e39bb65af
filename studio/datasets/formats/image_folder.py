"""A folder (or zip) of images with same-name ``.txt`` captions: ``cat.jpg`` + ``cat.txt``.

Rows come from ``studio.datasets.folder.caption_records`` as ``{"image", "caption"}`` and are
converted exactly like a caption table. Never detected from keys: chosen when the upload holds
images and no data file."""
from __future__ import annotations

from typing import Any

from studio.datasets.canonical import Draft
from studio.datasets.formats import caption
from studio.datasets.formats.base import Context

NAME = "image_folder"
DESCRIPTION = "Folder or zip of images with same-name .txt captions"
FIELDS = ("image", "caption")


def detect(keys: set[str]) -> bool:
    return False


def missing(keys: set[str]) -> list[str]:
    return []  # rows are made by the folder reader, never from a table


def convert(row: dict[str, Any], ctx: Context) -> Draft | None:
    return caption.convert(row, ctx)
