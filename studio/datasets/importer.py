"""The import pipeline: upload -> rows -> canonical JSONL + images, inside a staging folder.

Reads stream row by row (no per-row database work); every problem is collected before deciding.
Under ``on_error="fail"`` any problem raises ``DatasetImportError`` (the caller deletes the staging
folder, so nothing is written); under ``"skip"`` bad rows are counted and left out. The split into
train/validation is an exact, seeded sample, done in a second pass over the written rows.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

from studio.datasets import problems as P
from studio.datasets.archive import check_zip, extract_zip, is_zip
from studio.datasets.canonical import Draft, bind_placeholders, check_turns, dumps, image_part, text_part
from studio.datasets.files import FileUnreadable, Record, is_data_file, read_records
from studio.datasets.folder import caption_records, data_files, image_files, orphan_captions, visible_files
from studio.datasets.formats import FORMATS, Context, describe_formats, detect_format
from studio.datasets.images import ImageStore
from studio.datasets.options import ImportOptions
from studio.datasets.problems import DatasetImportError, Problem, RowProblems

TRAIN, VALIDATION, REPORT, ORIGINAL = "train.jsonl", "validation.jsonl", "report.json", "original"
EXTRACT_DIR = "_extracted"
DETECT_SAMPLE = 200  # good rows looked at to detect the format
MAX_KEPT_PROBLEMS = 10_000
MAX_REPORTED_PROBLEMS = 1_000
KEPT_SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")  # of folder uploads


@dataclass
class Source:
    """Where the rows come from. ``base_dir``: image paths are relative to it; ``allowed_root``:
    images may not be read from outside it; ``display``: the name used in messages."""

    upload: Path
    display: str
    data_file: Path | None
    folder: Path | None
    base_dir: Path
    allowed_root: Path
    archive_root: Path | None = None  # top folder of an extracted zip: images may be named from there


@dataclass
class ImportReport:
    """What ``report.json`` holds, and what the UI shows after an import."""

    source: str
    format: str
    format_detected: bool
    rows_read: int = 0
    rows_imported: int = 0
    num_train: int = 0
    num_validation: int = 0
    skipped: int = 0
    skipped_by_code: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0
    limit_reached: bool = False
    turns: int = 0
    image_refs: int = 0
    num_images: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    problems_total: int = 0
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build(upload: Path, stage: Path, options: ImportOptions, workspace_root: Path) -> ImportReport:
    """Fill ``stage`` with the dataset folder for ``upload``; raise ``DatasetImportError`` if refused."""
    _check_options(options, upload.name)
    source = locate(upload, stage / EXTRACT_DIR, options, workspace_root)
    records = _records(source)
    fmt_name, detected, records = _choose_format(records, source, options)
    builder = _Builder(stage, source, fmt_name, options)
    builder.run(records)
    report = builder.finish(detected)
    _keep_original(source, stage / ORIGINAL, builder.store.sources)
    shutil.rmtree(stage / EXTRACT_DIR, ignore_errors=True)
    (stage / REPORT).write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    return report


def _check_options(options: ImportOptions, display: str) -> None:
    errors = options.check()
    if errors:
        raise DatasetImportError([Problem(display, None, "options", P.BAD_VALUE, e) for e in errors])


# -- where the rows are ------------------------------------------------------------------------------
def locate(upload: Path, extract_to: Path, options: ImportOptions, workspace_root: Path) -> Source:
    """Resolve a data file, a folder or a zip (checked, then extracted) to a ``Source``."""
    display = upload.name
    if not upload.exists():
        _fail(display, P.BAD_SOURCE, f"{upload} does not exist", "upload the file first")
    if upload.is_file() and is_zip(upload):
        problems = check_zip(upload, display, options.archive)
        if problems:
            raise DatasetImportError(problems)
        extract_zip(upload, extract_to, display, options.archive)
        source = _in_folder(upload, extract_to, display + ":", extract_to)
        source.archive_root = extract_to
        return source
    if upload.is_file():
        if not is_data_file(upload):
            _fail(display, P.BAD_SOURCE, f"{upload.suffix or 'this file type'} is not a supported data file",
                  "upload JSON, JSONL, CSV, TSV, Parquet, a .zip, or a folder of images with .txt captions")
        return Source(upload, display, upload, None, upload.parent, workspace_root)
    return _in_folder(upload, upload, display + "/", workspace_root)


def _in_folder(upload: Path, root: Path, prefix: str, allowed_root: Path) -> Source:
    found = data_files(root)  # symlinks are never listed
    if len(found) == 1:
        rel = str(found[0].relative_to(root))
        return Source(upload, prefix + rel, found[0], None, found[0].parent, allowed_root)
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found[:10])
        _fail(upload.name, P.BAD_SOURCE, f"found {len(found)} data files ({names})",
              "upload one data file (with its images) per dataset")
    if image_files(root):
        return Source(upload, prefix.rstrip("/:"), None, root, root, allowed_root)
    _fail(upload.name, P.BAD_SOURCE, "no data file (.json, .jsonl, .csv, .tsv, .parquet) and no images found",
          "upload a data file, or images with same-name .txt captions")
    raise AssertionError  # unreachable


def _fail(file: str, code: str, message: str, hint: str) -> None:
    raise DatasetImportError([Problem(file, None, None, code, message, hint)])


def _records(source: Source) -> Iterator[Record]:
    if source.data_file is not None:
        return read_records(source.data_file, source.display)
    return caption_records(source.folder, source.display)


# -- which format -----------------------------------------------------------------------------------
def _choose_format(records: Iterator[Record], source: Source, options: ImportOptions):
    """The forced or detected format, and the records (the peeked ones put back in front)."""
    head: list[Record] = []
    keys: set[str] = set()
    try:
        for rec in records:
            head.append(rec)
            if rec.data is not None:
                keys |= set(apply_map(rec.data, options.column_map))
                if sum(r.data is not None for r in head) >= DETECT_SAMPLE:
                    break
    except FileUnreadable as e:
        raise DatasetImportError(e.problems) from None
    rest = chain(head, records)
    if options.format:
        return options.format, False, rest
    if source.data_file is None:
        return "image_folder", True, rest
    name = detect_format(keys)
    if name is None and keys:
        shown = ", ".join(sorted(keys)[:30])
        _fail(source.display, P.UNKNOWN_FORMAT, f"cannot tell the format from the fields seen: {shown}",
              f"choose a format and map your columns (--format, --map yourcol=field); known formats: "
              f"{describe_formats()}")
    return name or "alpaca", name is not None, rest


def apply_map(data: dict[str, Any], column_map: dict[str, str]) -> dict[str, Any]:
    """Rename the person's columns to the fields the format reads (``{"prompt": "instruction"}``)."""
    if not column_map:
        return data
    return {column_map.get(k, k): v for k, v in data.items()}


# -- converting rows --------------------------------------------------------------------------------
class _Builder:
    """Converts rows one by one into ``stage/all.jsonl``; then splits and reports."""

    def __init__(self, stage: Path, source: Source, fmt_name: str, options: ImportOptions):
        self.stage, self.source, self.options = stage, source, options
        self.fmt_name, self.fmt = fmt_name, FORMATS[fmt_name]
        self.store = ImageStore(stage, _unique([source.base_dir, source.archive_root or source.base_dir]),
                                source.allowed_root, options.max_image_pixels)
        self.all_path = stage / "all.jsonl"
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.skipped_by_code: Counter[str] = Counter()
        self.seen: set[bytes] = set()
        self.referenced: set[str] = set()
        self.c = Counter()  # rows_read, kept, duplicates, turns, image_refs, skipped

    def run(self, records: Iterable[Record]) -> None:
        with self.all_path.open("w", encoding="utf-8") as out:
            try:
                for rec in records:
                    if not self._feed(rec, out):
                        self.c["limit_reached"] = 1
                        break
            except FileUnreadable as e:
                self._add_problems(e.problems)

    def _feed(self, rec: Record, out) -> bool:
        self.c["rows_read"] += 1
        row, probs = self._convert(rec)
        if probs:
            self._reject(probs)
            return True
        line = dumps(row)
        if self.options.dedupe and not self._first_time(line):
            self.c["duplicates"] += 1
            return True
        out.write(line + "\n")
        self._count(row)
        return not (self.options.limit and self.c["kept"] >= self.options.limit)

    def _convert(self, rec: Record) -> tuple[dict[str, Any] | None, list[Problem]]:
        if rec.problems or rec.data is None:
            return None, rec.problems
        probs = RowProblems(self.source.display, rec.row, rec.line)
        draft = self.fmt.convert(apply_map(rec.data, self.options.column_map),
                                 Context(probs, self.options.instruction))
        if draft is None:
            return None, probs.items
        bind_placeholders(draft, probs)
        check_turns(draft.turns, probs)
        row = self._materialize(draft, probs)
        return row, probs.items

    def _materialize(self, draft: Draft, probs: RowProblems) -> dict[str, Any]:
        """Canonical row; images are checked and stored here (problems recorded, row kept whole)."""
        messages = []
        for turn in draft.turns:
            content = []
            for kind, value in turn.parts:
                if kind == "text":
                    content.append(text_part(value))
                else:
                    stored = self.store.add(value, probs, draft.images_field if draft.images else turn.field)
                    content.append(image_part(stored or ""))
            messages.append({"role": turn.role, "content": content})
        return {"messages": messages, **draft.extra}

    def _first_time(self, line: str) -> bool:
        digest = hashlib.blake2b(line.encode("utf-8"), digest_size=16).digest()
        if digest in self.seen:
            return False
        self.seen.add(digest)
        return True

    def _count(self, row: dict[str, Any]) -> None:
        self.c["kept"] += 1
        for m in row["messages"]:
            self.c["turns"] += m["role"] != "system"
            for part in m["content"]:
                if part["type"] == "image":
                    self.c["image_refs"] += 1
                    self.referenced.add(part["image"])

    def _reject(self, probs: list[Problem]) -> None:
        self.c["skipped"] += 1
        self.skipped_by_code[probs[0].code] += 1
        self._add_problems(probs)

    def _add_problems(self, probs: list[Problem]) -> None:
        self.problem_count += len(probs)
        room = MAX_KEPT_PROBLEMS - len(self.problems)
        self.problems.extend(probs[:max(room, 0)])

    # -- deciding and finishing ------------------------------------------------------------------
    def finish(self, detected: bool) -> ImportReport:
        self._decide()
        self._prune_images()
        n_val = self._split()
        return ImportReport(
            source=self.source.display, format=self.fmt_name, format_detected=detected,
            rows_read=self.c["rows_read"], rows_imported=self.c["kept"], num_train=self.c["kept"] - n_val,
            num_validation=n_val, skipped=self.c["skipped"], skipped_by_code=dict(self.skipped_by_code),
            duplicates_removed=self.c["duplicates"], limit_reached=bool(self.c["limit_reached"]),
            turns=self.c["turns"], image_refs=self.c["image_refs"], num_images=len(self.referenced),
            problems=[p.to_dict() for p in self.problems[:MAX_REPORTED_PROBLEMS]],
            problems_total=self.problem_count, warnings=self._warnings(), options=self.options.to_dict())

    def _decide(self) -> None:
        fatal = [p for p in self.problems if p.fatal]
        if fatal or (self.problems and self.options.on_error == "fail"):
            raise DatasetImportError(self.problems)
        if self.c["kept"] == 0:
            why = (f"all {self.c['skipped']} rows were skipped ({_codes(self.skipped_by_code)})"
                   if self.c["skipped"] else "the upload holds no rows")
            raise DatasetImportError(self.problems + [Problem(
                self.source.display, None, None, P.EMPTY_DATASET, f"no usable rows: {why}",
                "fix the problems listed, or upload a file with at least one complete conversation")])

    def _prune_images(self) -> None:
        """Images stored for rows that were skipped or deduplicated away."""
        for name in self.store.stored - self.referenced:
            (self.stage / name).unlink(missing_ok=True)
        self.store.sources = {k: v for k, v in self.store.sources.items() if v in self.referenced}

    def _split(self) -> int:
        """Exact, seeded validation sample; returns its size."""
        n = self.c["kept"]
        k = validation_size(n, self.options.val_fraction)
        if k == 0:
            os.replace(self.all_path, self.stage / TRAIN)
            return 0
        chosen = set(random.Random(self.options.seed).sample(range(n), k))
        with self.all_path.open(encoding="utf-8") as src, (self.stage / TRAIN).open("w", encoding="utf-8") as tr, \
                (self.stage / VALIDATION).open("w", encoding="utf-8") as va:
            for i, line in enumerate(src):
                (va if i in chosen else tr).write(line)
        self.all_path.unlink()
        return k

    def _warnings(self) -> list[str]:
        out = []
        if self.source.folder is not None:
            out += [f"caption {name!r} has no image with the same name; ignored"
                    for name in orphan_captions(self.source.folder)[:100]]
        if self.problem_count > len(self.problems):
            out.append(f"{self.problem_count} problems found; the first {len(self.problems)} are listed")
        return out


def _unique(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def validation_size(n: int, fraction: float) -> int:
    """Rows held out: ``round(n * fraction)``, at least 1 when asked for any, never all of them."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, round(n * fraction)), n - 1)


def _codes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {code}" for code, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# -- keeping the original ---------------------------------------------------------------------------
def _keep_original(source: Source, dest: Path, image_sources: dict[str, str]) -> None:
    """The upload as it came (zip or data file; for a folder its data/caption files), plus
    ``images.json`` mapping original image paths to stored names. Copied, not hard-linked: an
    upload overwritten in place later must not change what this dataset was built from."""
    dest.mkdir(parents=True, exist_ok=True)
    up = source.upload
    if up.is_file():
        shutil.copy2(up, dest / up.name)
    else:
        for p in visible_files(up):
            if p.suffix.lower() in KEPT_SUFFIXES:
                target = dest / up.name / p.relative_to(up)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
    if image_sources:
        (dest / "images.json").write_text(json.dumps(image_sources, ensure_ascii=False, indent=1), encoding="utf-8")

