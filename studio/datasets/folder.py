"""Uploads that are folders (or extracted zips): find the data file, or read an image folder
with same-name ``.txt`` captions as rows."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from studio.datasets import problems as P
from studio.datasets.files import Record, is_data_file
from studio.datasets.images import IMAGE_SUFFIXES
from studio.datasets.problems import Problem


def visible_files(root: Path) -> list[Path]:
    """Files under ``root``, sorted, without hidden files, OS junk (``.DS_Store``, ``__MACOSX``) and
    symlinks (a link could point anywhere on the machine)."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink()
                  and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(root).parts))


def symlinks(root: Path) -> list[str]:
    """Links inside ``root`` (never followed: a link could point anywhere on the machine)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink())


def data_files(root: Path) -> list[Path]:
    return [p for p in visible_files(root) if is_data_file(p)]


def image_files(root: Path) -> list[Path]:
    return [p for p in visible_files(root) if p.suffix.lower() in IMAGE_SUFFIXES]


def orphan_captions(root: Path) -> list[str]:
    """``.txt`` files with no image of the same name (reported as warnings, not errors)."""
    stems = {p.with_suffix("") for p in image_files(root)}
    return [str(p.relative_to(root)) for p in visible_files(root)
            if p.suffix.lower() == ".txt" and p.with_suffix("") not in stems]


def caption_records(root: Path, display: str) -> Iterator[Record]:
    """One row per image: ``{"image": relative path, "caption": text of the .txt beside it}``."""
    for row, image in enumerate(image_files(root), 1):
        rel = str(image.relative_to(root))
        yield _caption_record(row, rel, image.with_suffix(".txt"), display)


def _caption_record(row: int, rel: str, txt: Path, display: str) -> Record:
    where = f"{display}/{rel}" if display else rel
    if txt.is_symlink():
        return Record(row, None, problems=[Problem(where, row, "caption", P.SYMLINK,
                                                   f"caption file {txt.name!r} is a symbolic link; links are not followed",
                                                   "replace the link with the caption file itself")])
    if not txt.is_file():
        return Record(row, None, problems=[Problem(where, row, "caption", P.MISSING_CAPTION,
                                                   f"no caption file {txt.name!r} next to the image",
                                                   "add a .txt file with the same name, or remove the image")])
    try:
        raw = txt.read_bytes()
    except OSError as e:
        return Record(row, None, problems=[Problem(where, row, "caption", P.BAD_SOURCE,
                                                   f"caption file {txt.name!r} cannot be read: {e.strerror or e}",
                                                   "check the file's permissions")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return Record(row, None, problems=[Problem(
            f"{display}/{txt.name}" if display else txt.name, row, "caption", P.ENCODING,
            f"caption is not valid UTF-8 (byte 0x{raw[e.start]:02X} at byte offset {e.start})",
            "save the caption as UTF-8")])
    return Record(row, {"image": rel, "caption": text.strip()})
