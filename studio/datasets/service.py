"""Dataset records: plain functions over the database and the workspace (the UI and the CLI
call these; training reads rows through ``read_canonical``).

A dataset folder is built completely under ``tmp/`` first (no database work meanwhile, so a long
import never holds SQLite's write lock), then published in one short transaction: insert the row
to learn its id, rename the folder to ``datasets/<id>``, commit. If the commit fails the folder is
removed, so a row never points at a half-built folder and a folder never outlives its failed row.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select

from storage.db import Database
from storage.models import Dataset
from storage.workspace import Workspace
from studio.datasets import importer
from studio.datasets.importer import ImportReport
from studio.datasets.options import ImportOptions

SPLITS = ("train", "validation")


class DatasetNotFound(LookupError):
    """No dataset with this id."""


@dataclass
class ImportResult:
    dataset: Dataset  # detached row: read its attributes freely
    report: ImportReport


# -- import -----------------------------------------------------------------------------------------
def import_dataset(db: Database, source_path: str | os.PathLike, options: ImportOptions | None = None, *,
                   external: bool = False) -> ImportResult:
    """Import an upload (file, folder or zip inside the workspace) as a new dataset.

    ``external=True`` (the CLI's ``--copy``; never for paths from a browser): the upload may lie
    outside the workspace; its data and the images its rows name are copied into the dataset, and
    images are read only below the upload's folder (or the image root the person gave).

    Raises ``DatasetImportError`` (nothing written) or ``OutsideWorkspaceError``.
    """
    options = options or ImportOptions()
    ws = db.workspace
    upload = Path(source_path).expanduser().resolve() if external else ws.confine(source_path)
    with ws.scratch_dir("dataset") as stage:
        report = importer.build(upload, stage, options, ws.root, external=external and not _inside(ws, upload))
        row = _publish(db, stage, _row_fields(ws, upload, stage, report, options))
    return ImportResult(row, report)


def import_upload(db: Database, received: str | os.PathLike, original_name: str | None = None,
                  options: ImportOptions | None = None) -> ImportResult:
    """A file the web server received: copied into ``uploads/`` and imported; if the import is
    refused the copy is removed too, so a failed import leaves nothing behind."""
    from studio.uploads import store_upload

    stored = store_upload(db, received, original_name)
    try:
        return import_dataset(db, stored, options)
    except BaseException:
        shutil.rmtree(stored.parent, ignore_errors=True)  # store_upload made this folder for it alone
        raise


def _inside(ws: Workspace, path: Path) -> bool:
    return path == ws.root or ws.root in path.parents


def _publish(db: Database, stage: Path, fields: dict[str, Any]) -> Dataset:
    ws = db.workspace
    final: Path | None = None
    try:
        with db.session() as s:
            row = Dataset(**fields)
            s.add(row)
            s.flush()  # assigns the id
            final = ws.dataset_dir(row.id)
            _clear_stale(ws, final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage, final)
            row.path = ws.relative(final)
        return row
    except BaseException:
        if final is not None and final.exists() and not stage.exists():
            shutil.rmtree(final, ignore_errors=True)
        raise


def _clear_stale(ws: Workspace, final: Path) -> None:
    """A folder left by a crash under an id SQLite hands out again: no row owns it, move it away."""
    if final.exists():
        os.replace(final, ws.tmp_dir / f"stale-{final.name}.{uuid.uuid4().hex[:8]}.partial")


def _row_fields(ws: Workspace, upload: Path, stage: Path, report: ImportReport, options: ImportOptions) -> dict:
    # the lists of problems and dropped rows stay in report.json: they can be long
    summary = {k: v for k, v in report.to_dict().items() if k not in ("problems", "options", "dropped")}
    return dict(
        name=(options.name or upload.stem).strip()[:200],
        source=ws.relative(upload) if upload.is_relative_to(ws.root) else str(upload),
        format=report.format,
        num_rows=report.rows_imported, num_train=report.num_train, num_validation=report.num_validation,
        num_images=report.num_images, num_skipped=report.skipped,
        size_bytes=_folder_size(stage), has_images=report.num_images > 0,
        info={"kind": report.kind, "report": summary, "options": options.to_dict(),
              "split": {"val_fraction": options.val_fraction, "seed": options.seed,
                        "train": report.num_train, "validation": report.num_validation}},
    )


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- records ----------------------------------------------------------------------------------------
def list_datasets(db: Database) -> list[Dataset]:
    """Newest first."""
    with db.session() as s:
        return list(s.scalars(select(Dataset).order_by(Dataset.id.desc())))


def get_dataset(db: Database, dataset_id: int) -> Dataset:
    with db.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise DatasetNotFound(f"no dataset with id {dataset_id}")
        return row


def rename_dataset(db: Database, dataset_id: int, name: str) -> Dataset:
    name = (name or "").strip()
    if not 0 < len(name) <= 200:
        raise ValueError("a dataset name must be 1 to 200 characters")
    with db.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise DatasetNotFound(f"no dataset with id {dataset_id}")
        row.name = name
        return row


def delete_dataset(db: Database, dataset_id: int) -> None:
    """Remove the row and the files. The folder is first moved aside (atomic), so if the row
    cannot be deleted it is moved back and nothing is lost."""
    folder = dataset_dir(db, get_dataset(db, dataset_id))
    with db.workspace.set_aside(folder, f"deleted-{dataset_id}"), db.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is not None:
            s.delete(row)


def dataset_kind(dataset: Dataset) -> str:
    """``sft``, ``preference`` or ``kto`` (``studio.datasets.preference``); datasets imported before
    preference data existed are instruction sets."""
    return (dataset.info or {}).get("kind", "sft")


def dataset_dir(db: Database, dataset: Dataset | int) -> Path:
    if isinstance(dataset, int):
        dataset = get_dataset(db, dataset)
    return db.workspace.confine(dataset.path) if dataset.path else db.workspace.dataset_dir(dataset.id)


def load_report(db: Database, dataset_id: int) -> dict[str, Any]:
    """The full import report (with the list of problems of skipped rows)."""
    path = dataset_dir(db, dataset_id) / importer.REPORT
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# -- rows -------------------------------------------------------------------------------------------
def read_canonical(db: Database, dataset_id: int, split: str = "train",
                   resolve_images: bool = True) -> Iterator[dict[str, Any]]:
    """Canonical rows of a split, streamed. With ``resolve_images`` image parts hold absolute
    paths (what a processor opens); without, the stored ``images/<sha>.<ext>`` names."""
    folder = dataset_dir(db, dataset_id)
    path = _split_file(folder, split)
    if path is None:
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            yield _resolved(row, folder) if resolve_images else row


def _split_file(folder: Path, split: str) -> Path | None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = folder / (importer.TRAIN if split == "train" else importer.VALIDATION)
    return path if path.exists() else None


def _resolved(row: dict[str, Any], folder: Path) -> dict[str, Any]:
    for m in row["messages"]:
        for part in m["content"]:
            if part.get("type") == "image":
                part["image"] = str(folder / part["image"])
    return row


def preview(db: Database, dataset_id: int, n: int = 20, offset: int = 0, split: str = "train") -> list[dict[str, Any]]:
    """Rows ``offset .. offset+n`` as chat messages with absolute image paths (for thumbnails):
    ``[{"index": 0, "messages": [{"role", "content": [{"type": "text"|"image", ...}]}]}]``."""
    if n < 0 or offset < 0:
        raise ValueError("n and offset must not be negative")
    out = []
    for i, row in enumerate(read_canonical(db, dataset_id, split)):
        if i >= offset + n:
            break
        if i >= offset:
            out.append({"index": i, **row})
    return out


def statistics(db: Database, dataset_id: int, processor: Any, *, split: str = "train", cutoff_len: int = 2048,
               min_pixels: int | None = None, max_pixels: int | None = None, image_token: str | None = None,
               image_tokens: Any = None, bins: int = 20, limit: int | None = None):
    """Rows, turns, images and a token-length histogram of a split, measured with ``processor``
    (a loaded tokenizer or processor); see ``studio.datasets.stats.compute_statistics``."""
    from studio.datasets.stats import compute_statistics

    return compute_statistics(read_canonical(db, dataset_id, split), processor, cutoff_len=cutoff_len,
                              min_pixels=min_pixels, max_pixels=max_pixels, image_token=image_token,
                              image_tokens=image_tokens, bins=bins, limit=limit)


def request_statistics(db: Database, dataset_id: int, model_ref: str, *, cutoff_len: int = 2048,
                       max_pixels: int | None = None, split: str = "train") -> int:
    """Queue a statistics job (the worker loads the model's tokenizer); returns the job id."""
    from jobs import queue

    get_dataset(db, dataset_id)  # fail fast on a wrong id
    return queue.enqueue(db, "datasets.stats", {"dataset_id": dataset_id, "model_ref": model_ref,
                                                 "cutoff_len": cutoff_len, "max_pixels": max_pixels,
                                                 "split": split}, priority=5)
