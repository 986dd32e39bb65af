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
from studio.datasets.folder import caption_records, data_files, image_files, orphan_captions, symlinks, visible_files
from studio.datasets.formats import FORMATS, Context, describe_formats, detect_format, format_kind
from studio.datasets.formats.base import refuse_unsupported_media
from studio.datasets.images import ImageStore
from studio.datasets.options import ImportOptions
from studio.datasets.preference import KIND_WORDS, SFT, check_draft
from studio.datasets.problems import DatasetImportError, Problem, RowProblems
from studio.datasets.values import check_row

TRAIN, VALIDATION, REPORT, ORIGINAL = "train.jsonl", "validation.jsonl", "report.json", "original"
EXTRACT_DIR = "_extracted"
DETECT_SAMPLE = 200  # good rows looked at to detect the format
MAX_KEPT_PROBLEMS = 10_000
MAX_REPORTED_PROBLEMS = 1_000
KEPT_SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")  # of folder uploads


@dataclass
class Source:
    """Where the rows come from. ``base_dir``: image paths are relative to it first; ``search_root``:
    its ancestors up to this one are searched next (the upload's root: an extracted zip, an uploaded
    folder, the workspace); ``allowed_root``: images may not be read from outside it; ``display``:
    the name used in messages."""

    upload: Path
    display: str
    data_file: Path | None
    folder: Path | None
    base_dir: Path
    allowed_root: Path
    archive_root: Path | None = None  # top folder of an extracted zip: images may be named from there
    search_root: Path | None = None

    def __post_init__(self):
        self.search_root = self.search_root or self.archive_root or self.allowed_root


@dataclass
class ImportReport:
    """What ``report.json`` holds, and what the UI shows after an import."""

    source: str
    format: str
    format_detected: bool
    kind: str = SFT  # sft | preference | kto (studio.datasets.preference)
    rows_read: int = 0
    rows_imported: int = 0
    num_train: int = 0
    num_validation: int = 0
    skipped: int = 0
    skipped_by_code: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0
    limit_reached: bool = False
    rows_over_limit: int = 0  # rows after the row limit: read, not imported
    dropped: list[dict[str, Any]] = field(default_factory=list)  # every row left out or merged, and why
    dropped_total: int = 0
    images_found_in: dict[str, int] = field(default_factory=dict)  # folder -> images found relative to it
    turns: int = 0
    image_refs: int = 0
    num_images: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    problems_total: int = 0
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rows_total(self) -> int:
        return self.rows_read + self.rows_over_limit

    def accounting(self) -> str:
        """Where every row went: ``999 rows read -> 985 imported: 14 duplicates removed``."""
        why = []
        if self.skipped:
            why.append(f"{self.skipped} bad {_plural(self.skipped, 'row')} skipped ({_codes(self.skipped_by_code)})")
        if self.duplicates_removed:
            why.append(f"{self.duplicates_removed} {_plural(self.duplicates_removed, 'duplicate')} removed")
        if self.rows_over_limit:
            why.append(f"{self.rows_over_limit} {_plural(self.rows_over_limit, 'row')} over the row limit left out")
        head = f"{self.rows_total} {_plural(self.rows_total, 'row')} read -> {self.rows_imported} imported"
        return head + (": " + ", ".join(why) if why else "")

    def images_note(self) -> str:
        """``images found in uploads/repo (12), uploads/repo/images (3)``; empty without images."""
        if not self.images_found_in:
            return ""
        return "images found in " + ", ".join(f"{where} ({n})" for where, n in self.images_found_in.items())


def _plural(n: int, noun: str) -> str:
    return noun if n == 1 else noun + "s"


def build(upload: Path, stage: Path, options: ImportOptions, workspace_root: Path, *,
          external: bool = False) -> ImportReport:
    """Fill ``stage`` with the dataset folder for ``upload``; raise ``DatasetImportError`` if refused.

    ``external``: the caller (the CLI's ``--copy``, run by the person) vouches for an upload outside
    the workspace; images are then read only below the upload's folder and the image root."""
    _check_options(options, upload.name)
    try:
        source = locate(upload, stage / EXTRACT_DIR, options, workspace_root, external)
        image_root = resolve_image_root(options.image_root, source, workspace_root, external)
        records = _records(source)
        fmt_name, detected, records = _choose_format(records, source, options)
        builder = _Builder(stage, source, fmt_name, options, image_root, workspace_root)
        builder.run(records)
        report = builder.finish(detected)
        _keep_original(source, stage / ORIGINAL, builder.store.sources)
    except DatasetImportError:
        raise
    except Exception as e:  # no input may end in a traceback: say what broke, and where
        raise DatasetImportError([Problem(upload.name, None, None, P.INTERNAL,
                                          f"the file could not be imported ({type(e).__name__}: {e})",
                                          "check the file; if it looks right, report this message")]) from e
    shutil.rmtree(stage / EXTRACT_DIR, ignore_errors=True)
    # backslashreplace: a message may quote a field name that holds undecodable bytes
    (stage / REPORT).write_bytes(json.dumps(report.to_dict(), ensure_ascii=False, indent=1)
                                 .encode("utf-8", "backslashreplace"))
    return report


def _check_options(options: ImportOptions, display: str) -> None:
    errors = options.check()
    if errors:
        raise DatasetImportError([Problem(display, None, "options", P.BAD_VALUE, e) for e in errors])


# -- where the rows are ------------------------------------------------------------------------------
def locate(upload: Path, extract_to: Path, options: ImportOptions, workspace_root: Path,
           external: bool = False) -> Source:
    """Resolve a data file, a folder or a zip (checked, then extracted) to a ``Source``. An upload
    from outside the workspace may only read below its own folder."""
    display = upload.name
    if not upload.exists():
        _fail(display, P.BAD_SOURCE, f"{upload} does not exist", "upload the file first")
    if upload.is_file() and is_zip(upload):
        problems = check_zip(upload, display, options.archive)
        if problems:
            raise DatasetImportError(problems)
        extract_zip(upload, extract_to, display, options.archive)
        source = _in_folder(upload, extract_to, display + ":", extract_to)
        source.archive_root = source.search_root = extract_to
        return source
    if upload.is_file():
        if not is_data_file(upload):
            _fail(display, P.BAD_SOURCE, f"{upload.suffix or 'this file type'} is not a supported data file",
                  "upload JSON, JSONL, CSV, TSV, Parquet, a .zip, or a folder of images with .txt captions")
        return Source(upload, display, upload, None, upload.parent, upload.parent if external else workspace_root)
    source = _in_folder(upload, upload, display + "/", upload if external else workspace_root)
    source.search_root = upload  # an uploaded folder is its own root
    return source


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
    links = [p for p in symlinks(root) if is_data_file(Path(p))]
    if links:
        _fail(upload.name, P.SYMLINK, f"the only data files are symbolic links ({', '.join(links[:10])}); "
              "links are not followed", "put the data file itself into the folder")
    _fail(upload.name, P.BAD_SOURCE, "no data file (.json, .jsonl, .csv, .tsv, .parquet) and no images found",
          "upload a data file, or images with same-name .txt captions")
    raise AssertionError  # unreachable


# -- where the images are ---------------------------------------------------------------------------
IMAGE_SUBFOLDERS = ("images", "image", "imgs")  # where repositories keep images beside the data file


def resolve_image_root(image_root: str | None, source: Source, workspace_root: Path, external: bool) -> Path | None:
    """The image root as a real folder: absolute, or relative to the data file's folder, the upload's
    root or the workspace (the first where it exists).
    It must lie inside the workspace (or the extracted archive), unless the caller vouches for an
    outside upload, where the person named it themself."""
    if image_root is None:
        return None
    given = Path(image_root.strip())
    bases = _unique([source.base_dir, source.search_root, workspace_root])
    tries = [given] if given.is_absolute() else [base / given for base in bases]
    folder = next((p.resolve() for p in tries if p.is_dir()), None)
    if folder is None:
        _fail(source.display, P.BAD_SOURCE, f"image root {image_root!r} is not a folder",
              "give the folder that holds the images (absolute, or relative to the upload or the workspace)")
    inside = [workspace_root.resolve()] + ([source.archive_root.resolve()] if source.archive_root else [])
    if not external and not any(r == folder or r in folder.parents for r in inside):
        _fail(source.display, P.BAD_SOURCE, f"image root {image_root!r} lies outside the workspace",
              "copy the images into the workspace (or import with --copy from the command line)")
    return folder


def image_search_dirs(source: Source, image_root: Path | None) -> list[Path]:
    """Folders a relative image path is tried against, in order: the image root alone if given;
    else the data file's folder and each ancestor up to the upload's root, each followed by its
    ``images/`` folder (LLaVA's and lmms-finetune's layout)."""
    if image_root is not None:
        return [image_root]
    base, top = source.base_dir.resolve(), source.search_root.resolve()
    folders = [base]
    if top in base.parents:
        folders += [p for p in base.parents if p == top or top in p.parents]
    return [d for folder in folders for d in (folder, *(folder / s for s in IMAGE_SUBFOLDERS))
            if d == folder or d.is_dir()]


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
    row_formats: Counter[str | None] = Counter()
    try:
        for rec in records:
            head.append(rec)
            if rec.data is not None:
                row_keys = set(apply_map(rec.data, options.column_map))
                keys |= row_keys
                row_formats[detect_format(row_keys)] += 1
                if sum(r.data is not None for r in head) >= DETECT_SAMPLE:
                    break
    except FileUnreadable as e:
        raise DatasetImportError(e.problems) from None
    rest = chain(head, records)
    if source.data_file is None:
        return options.format or "image_folder", options.format is None, rest
    name = options.format or _detect(keys, row_formats)
    if name is None and keys:
        shown = ", ".join(sorted(keys)[:30])
        _fail(source.display, P.UNKNOWN_FORMAT, f"cannot tell the format from the fields seen: {shown}{_closest(keys)}",
              f"choose a format and map your columns (--format, --map yourcol=field); known formats: "
              f"{describe_formats()}")
    if keys and source.data_file.suffix.lower() in TABLE_SUFFIXES:
        _require_columns(FORMATS[name or "alpaca"], keys, source, options)
    return name or "alpaca", options.format is None and name is not None, rest


def _detect(keys: set[str], row_formats: Counter) -> str | None:
    """The format of all fields seen (rows leave optional fields out), unless no single row has that
    format: a file that mixes kinds (pairs with instruction rows) is read as its most common row
    format, so each odd row is named as such instead of every row missing fields."""
    name = detect_format(keys)
    if name is None or name in row_formats:
        return name
    common = [f for f, _ in row_formats.most_common() if f is not None]
    return common[0] if common else name


TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")  # every row has the header's columns


def _require_columns(fmt, keys: set[str], source: Source, options: ImportOptions) -> None:
    """A table without a column the format needs fails every row the same way: refuse it once."""
    missing = fmt.missing(keys)
    if missing:
        mapped = f" (after mapping {options.column_map})" if options.column_map else ""
        _fail(source.display, P.MISSING_COLUMN,
              f"the {fmt.NAME} format needs {' and '.join(missing)}, but the columns are: {', '.join(sorted(keys))}{mapped}",
              "rename the column in the file, or map it (--map yourcol=field, or the column mapping field)")


def _closest(keys: set[str]) -> str:
    """``; closest: alpaca (lacks output)`` — the format that needs the fewest missing fields."""
    scored = [(len(fmt.missing(keys)), -len(keys & set(fmt.FIELDS)), name) for name, fmt in FORMATS.items()
              if name != "image_folder" and keys & set(fmt.FIELDS)]
    if not scored:
        return ""
    _, _, name = min(scored)
    return f"; closest: {name} (lacks {' and '.join(FORMATS[name].missing(keys))})"


def apply_map(data: dict[str, Any], column_map: dict[str, str]) -> dict[str, Any]:
    """Rename the person's columns to the fields the format reads (``{"prompt": "instruction"}``)."""
    if not column_map:
        return data
    return {column_map.get(k, k): v for k, v in data.items()}


# -- converting rows --------------------------------------------------------------------------------
class _Builder:
    """Converts rows one by one into ``stage/all.jsonl``; then splits and reports."""

    def __init__(self, stage: Path, source: Source, fmt_name: str, options: ImportOptions,
                 image_root: Path | None = None, workspace_root: Path | None = None):
        self.stage, self.source, self.options = stage, source, options
        self.workspace_root = (workspace_root or source.allowed_root).resolve()
        self.fmt_name, self.fmt = fmt_name, FORMATS[fmt_name]
        self.kind = format_kind(fmt_name)
        roots = _unique([source.allowed_root, *([image_root] if image_root else [])])
        hint = (f"check the path; it is read relative to the image root {options.image_root!r}" if image_root else
                "check the path; it is read relative to the data file's folder, then its parent folders up to the "
                "upload's root (and their images/ folders); or set the image root")
        self.store = ImageStore(stage, image_search_dirs(source, image_root), roots, options.max_image_pixels,
                                options.max_aspect_ratio, hint)
        self.all_path = stage / "all.jsonl"
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.skipped_by_code: Counter[str] = Counter()
        self.seen: dict[bytes, int] = {}  # row digest -> first row with it
        self.referenced: set[str] = set()
        self.dropped: list[dict[str, Any]] = []
        self.c = Counter()  # rows_read, kept, duplicates, turns, image_refs, skipped, over_limit, dropped

    def run(self, records: Iterable[Record]) -> None:
        records = iter(records)
        with self.all_path.open("w", encoding="utf-8") as out:
            try:
                for rec in records:
                    if not self._feed(rec, out):
                        self.c["limit_reached"] = 1
                        self._count_rest(records)
                        break
            except FileUnreadable as e:
                self._add_problems(e.problems)

    def _count_rest(self, records: Iterator[Record]) -> None:
        """Rows after the limit are only counted, so the report can say how many were left out."""
        first = last = None
        for rec in records:
            first = rec.row if first is None else first
            last = rec.row
            self.c["over_limit"] += 1
        if first is not None:
            self._drop({"reason": "over_limit", "rows": f"{first}-{last}" if last != first else str(first),
                        "count": self.c["over_limit"]})

    def _feed(self, rec: Record, out) -> bool:
        self.c["rows_read"] += 1
        try:
            row, probs = self._convert(rec)
            line = dumps(row) if not probs else ""
            line.encode("utf-8")  # the row is written as UTF-8: a value that cannot be fails here, not there
        except Exception as e:  # a converter bug must cost one row, not the import, and never a traceback
            probs = [Problem(self.source.display, rec.row, None, P.INTERNAL,
                             f"row could not be converted ({type(e).__name__}: {e})",
                             "check this row's structure", rec.line)]
        if probs:
            self._reject(rec, probs)
            return True
        if self.options.dedupe:
            first = self._first_row_with(line, rec.row)
            if first != rec.row:
                self.c["duplicates"] += 1
                self._drop({"row": rec.row, "reason": "duplicate", "of_row": first})
                return True
        out.write(line + "\n")
        self._count(row)
        return not (self.options.limit and self.c["kept"] >= self.options.limit)

    def _convert(self, rec: Record) -> tuple[dict[str, Any] | None, list[Problem]]:
        if rec.problems or rec.data is None:
            return None, rec.problems
        probs = RowProblems(self.source.display, rec.row, rec.line)
        check_row(rec.data, self.options.rows, probs)
        if probs:
            return None, probs.items
        data = apply_map(rec.data, self.options.column_map)
        ctx = Context(probs, self.options.instruction)
        refuse_unsupported_media(data, ctx)
        self._refuse_other_kind(data, probs)
        if probs:
            return None, probs.items
        draft = self.fmt.convert(data, ctx)
        if draft is None:
            return None, probs.items
        bind_placeholders(draft, probs)
        if draft.kind == SFT:
            check_turns(draft.turns, probs)
        else:
            check_draft(draft, probs)
        row = self._materialize(draft, probs)
        return row, probs.items

    def _refuse_other_kind(self, data: dict[str, Any], probs: RowProblems) -> None:
        """A preference pair in an instruction file (or the reverse) is not a broken row of this
        format: say that the file mixes kinds, which one this row is, and how to split it."""
        if self.options.format is not None:
            return
        own = detect_format(set(data))
        if own is None or format_kind(own) == self.kind:
            return
        probs.add(None, P.MIXED_KINDS,
                  f"this row is {KIND_WORDS[format_kind(own)]} ({own} fields), but the file was read as "
                  f"{self.fmt_name}: {KIND_WORDS[self.kind]}; one dataset holds one kind of row",
                  "split the file and import each kind as its own dataset")

    def _materialize(self, draft: Draft, probs: RowProblems) -> dict[str, Any]:
        """Canonical row; images are checked and stored here (problems recorded, row kept whole)."""
        row: dict[str, Any] = {"kind": draft.kind} if draft.kind != SFT else {}
        row["messages"] = self._messages(draft, draft.turns, probs)
        for branch, turns in draft.branches.items():
            row[branch] = self._messages(draft, turns, probs)
        return {**row, **draft.extra}

    def _messages(self, draft: Draft, turns: list, probs: RowProblems) -> list[dict[str, Any]]:
        messages = []
        for turn in turns:
            content = []
            for kind, value in turn.parts:
                if kind == "text":
                    content.append(text_part(value))
                else:
                    stored = self.store.add(value, probs, draft.images_field if draft.images else turn.field)
                    content.append(image_part(stored or ""))
            messages.append({"role": turn.role, "content": content})
        return messages

    def _first_row_with(self, line: str, row: int) -> int:
        """The first row that converted to exactly ``line`` (``row`` itself if none did)."""
        digest = hashlib.blake2b(line.encode("utf-8"), digest_size=16).digest()
        return self.seen.setdefault(digest, row)

    def _count(self, row: dict[str, Any]) -> None:
        self.c["kept"] += 1
        for m in row["messages"]:
            self.c["turns"] += m["role"] != "system"
            for part in m["content"]:
                if part["type"] == "image":
                    self.c["image_refs"] += 1
                    self.referenced.add(part["image"])

    def _reject(self, rec: Record, probs: list[Problem]) -> None:
        self.c["skipped"] += 1
        self.skipped_by_code[probs[0].code] += 1
        self._drop({"row": rec.row, "reason": "skipped", "code": probs[0].code, "message": probs[0].message})
        self._add_problems(probs)

    def _drop(self, entry: dict[str, Any]) -> None:
        self.c["dropped"] += 1
        if len(self.dropped) < MAX_KEPT_PROBLEMS:
            self.dropped.append(entry)

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
            source=self.source.display, format=self.fmt_name, format_detected=detected, kind=self.kind,
            rows_read=self.c["rows_read"], rows_imported=self.c["kept"], num_train=self.c["kept"] - n_val,
            num_validation=n_val, skipped=self.c["skipped"], skipped_by_code=dict(self.skipped_by_code),
            duplicates_removed=self.c["duplicates"], limit_reached=bool(self.c["limit_reached"]),
            rows_over_limit=self.c["over_limit"], dropped=self.dropped, dropped_total=self.c["dropped"],
            images_found_in=self._images_found_in(), turns=self.c["turns"], image_refs=self.c["image_refs"],
            num_images=len(self.referenced),
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

    def _images_found_in(self) -> dict[str, int]:
        """Folders (as the person knows them) the kept rows' image files were found relative to."""
        counts = Counter(self.store.found_in.get(name) for name in self.referenced)
        return {self._shown(folder): n for folder, n in counts.most_common() if folder is not None}

    def _shown(self, folder: Path) -> str:
        src = self.source
        if src.archive_root is not None and (folder == src.archive_root.resolve()
                                             or src.archive_root.resolve() in folder.parents):
            rel = folder.relative_to(src.archive_root.resolve())
            return f"{src.upload.name}:{'' if str(rel) == '.' else rel}/"
        root = self.workspace_root
        return str(folder.relative_to(root)) if root in folder.parents else str(folder)

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
            out += [f"{name!r} is a symbolic link; links are not followed, so it was left out"
                    for name in symlinks(self.source.folder)[:100]]
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

