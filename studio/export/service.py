"""Export service: what the UI and the CLI call. Plain functions over the database; no torch.

    export_id = start_export(db, adapter_id, kind="merged", dtype="bfloat16", shard_size="2GB")
    get_export(db, export_id).status        # queued -> running -> succeeded | failed | cancelled
    path = download_path(db, export_id)      # the verified zip, or an ExportError saying why not

Downloads are addressed by export id only. ``download_path`` never takes a path from a request:
it reads the row, refuses anything unfinished or unverified, and refuses a row whose path leads
outside that export's own folder in the workspace (a tampered or corrupt row; defence in depth).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jobs import queue
from storage.db import Database, get_or_raise
from storage.models import Adapter, Export, Job, JobStatus, Run, utcnow
from studio.export.errors import (
    AdapterMissingError,
    AdapterNotMergeableError,
    ExportBusyError,
    ExportNotFoundError,
    ExportNotReadyError,
    ExportPathRefusedError,
)
from studio.export.options import ADAPTER, GGUF, ExportOptions

JOB_KIND = "export"
UNLINKED_GRACE = dt.timedelta(minutes=1)  # a row still without its job after this: enqueueing crashed


@dataclass(frozen=True)
class ExportInfo:
    """A read-only view of an export for the UI: the row, plus its job's progress and error."""

    id: int
    adapter_id: int | None
    kind: str
    status: str
    verified: bool | None
    size_bytes: int | None
    sha256: str | None
    path: str | None  # the archive, relative to the workspace
    options: dict[str, Any]
    verification: dict[str, Any]
    created_at: dt.datetime
    job_id: int | None
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def downloadable(self) -> bool:
        return self.status == JobStatus.SUCCEEDED and self.verified is True and self.path is not None

    @property
    def folder(self) -> str | None:
        """The unpacked model (or adapter) folder, relative to the workspace, once finished."""
        return self.verification.get("folder") if self.downloadable else None


# -- starting -------------------------------------------------------------------------------------
def resolve_adapter(db: Database, target: str | int) -> int:
    """An adapter id from ``adapter:5``, ``run:3`` (that run's newest adapter) or ``3`` (a run id)."""
    text = str(target).strip()
    prefix, _, number = text.rpartition(":")
    if prefix not in ("", "run", "adapter") or not number.isdigit():
        raise ValueError(f"{target!r} is not RUN_ID, run:ID or adapter:ID")
    with db.session() as s:
        if prefix == "adapter":
            if s.get(Adapter, int(number)) is None:
                raise ExportNotFoundError(f"adapter {number} does not exist")
            return int(number)
        if s.get(Run, int(number)) is None:
            raise ExportNotFoundError(f"run {number} does not exist")
        adapter_id = s.execute(select(Adapter.id).where(Adapter.run_id == int(number))
                               .order_by(Adapter.id.desc()).limit(1)).scalar()
    if adapter_id is None:
        raise ExportNotFoundError(f"run {number} has no adapter (it has not finished training, or it failed)")
    return adapter_id


def adapter_folder(db: Database, adapter: Adapter) -> Path:
    """The adapter's folder, confined to the workspace; refuses one that is missing or not PEFT."""
    folder = db.workspace.confine(adapter.path)
    if not (folder / "adapter_config.json").is_file():
        raise AdapterMissingError(f"adapter {adapter.id}: no PEFT adapter at {adapter.path} in the workspace "
                                  "(the folder was deleted or never written); retrain the run to recreate it")
    return folder


def start_export(db: Database, adapter_id: int, kind: str = "merged", dtype: str = "auto",
                 shard_size: str | int = "2GB", device: str = "auto", gguf_type: str | None = None) -> int:
    """Check the request, create the Export row (queued) and enqueue its job. Returns the export id."""
    options = ExportOptions.parse(kind=kind, dtype=dtype, shard_size=shard_size, device=device, gguf_type=gguf_type)
    with db.session() as s:
        adapter = get_or_raise(s, Adapter, adapter_id, ExportNotFoundError)
        folder = adapter_folder(db, adapter)
        if options.kind != ADAPTER:
            check_not_reward_model(adapter, s.get(Run, adapter.run_id) if adapter.run_id else None)
            check_mergeable(adapter, folder)
        if options.kind == GGUF:
            check_gguf_base(adapter.base_model_ref)
        export = Export(adapter_id=adapter_id, kind=options.kind, status=JobStatus.QUEUED,
                        verification={"options": options.to_dict()})
        s.add(export)
        s.flush()
        export_id = export.id
    try:
        job_id = queue.enqueue(db, JOB_KIND, {"export_id": export_id})
    except BaseException:
        with db.session() as s:
            s.delete(s.get(Export, export_id))
        raise
    with db.session() as s:
        s.get(Export, export_id).job_id = job_id
    return export_id


# PEFT types that add virtual tokens or prefixes instead of weight deltas: nothing to merge.
PROMPT_LEARNING_TYPES = {"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING",
                         "ADAPTION_PROMPT", "CPT"}


def check_not_reward_model(adapter: Adapter, run: Run | None, config: dict[str, Any] | None = None) -> None:
    """A reward model (the base with a score head, stage ``reward``; PEFT task SEQ_CLS) scores answers
    and writes none: merged into the base or as GGUF it would be a language model that lost its head."""
    stage = (((run.spec or {}) if run is not None else {}).get("stage") or {}).get("name")
    if stage == "reward" or str((config or {}).get("task_type") or "").upper() == "SEQ_CLS":
        raise AdapterNotMergeableError(
            f"adapter {adapter.id} is a reward model (a score head on the base): it scores answers and writes none, "
            "so there is no merged language model or GGUF file to make. Export it as 'adapter only' (it loads with "
            "PeftModel.from_pretrained on AutoModelForSequenceClassification with num_labels=1).")


def check_mergeable(adapter: Adapter, folder: Path) -> None:
    """Refuse, before queueing, an adapter whose PEFT type has no weights to merge (read from its
    adapter_config.json; no peft import)."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AdapterMissingError(f"adapter {adapter.id}: {folder / 'adapter_config.json'} does not parse ({e}); "
                                  "retrain the run to recreate it") from e
    check_not_reward_model(adapter, None, config)
    peft_type = str(config.get("peft_type") or "").upper()
    from studio.methods import METHODS

    method = METHODS.get(adapter.method or "")
    if method is not None and not method.merges and peft_type not in PROMPT_LEARNING_TYPES:
        raise AdapterNotMergeableError(f"adapter {adapter.id} was trained with {method.label}: {method.merge_note} "
                                       "Export it as 'adapter only'.")
    if peft_type in PROMPT_LEARNING_TYPES:
        raise AdapterNotMergeableError(
            f"adapter {adapter.id} is a {peft_type} adapter: it adds learned virtual tokens, not weight changes, so "
            "it cannot be merged into the base model (no merged model, no GGUF). Export it as 'adapter only'.")


def check_gguf_base(base_model_ref: str) -> None:
    """Refuse a GGUF export of a base the converter cannot write, when its config.json can be read
    here without the network (built-in or local folder); others are checked by the job."""
    from studio.export import to_gguf

    config = _local_config(base_model_ref)
    if config is not None:
        to_gguf.check_config(config)


def _local_config(ref: str) -> dict | None:
    from studio.models import ModelError, inspect, parse_ref

    try:
        parsed = parse_ref(ref)
        if parsed.source == "builtin":
            return inspect(ref).config
        if parsed.source == "local":
            return json.loads((Path(parsed.name) / "config.json").read_text(encoding="utf-8"))
    except (ModelError, OSError, ValueError):
        return None  # the job reports what is wrong with the model itself
    return None


# -- reading --------------------------------------------------------------------------------------
def get_export(db: Database, export_id: int) -> ExportInfo:
    sync_with_job(db, export_id)
    with db.session() as s:
        export = get_or_raise(s, Export, export_id, ExportNotFoundError)
        return _info(export, s.get(Job, export.job_id) if export.job_id else None)


def list_exports(db: Database, adapter_id: int | None = None, limit: int = 100) -> list[ExportInfo]:
    """Newest first, optionally only one adapter's."""
    with db.session() as s:
        q = select(Export.id).order_by(Export.id.desc()).limit(limit)
        if adapter_id is not None:
            q = q.where(Export.adapter_id == adapter_id)
        ids = list(s.execute(q).scalars())
    return [get_export(db, i) for i in ids]


def _info(export: Export, job: Job | None) -> ExportInfo:
    verification = dict(export.verification or {})
    return ExportInfo(id=export.id, adapter_id=export.adapter_id, kind=export.kind, status=export.status,
                      verified=export.verified, size_bytes=export.size_bytes, sha256=export.sha256,
                      path=export.path, options=dict(verification.get("options") or {}),
                      verification=verification, created_at=export.created_at, job_id=export.job_id,
                      progress=dict(job.progress or {}) if job else {},
                      error=verification.get("error") or (job.error if job else None))


# -- downloading ----------------------------------------------------------------------------------
def download_path(db: Database, export_id: int) -> Path:
    """The verified archive of a finished export, checked to lie inside ``exports/<id>/``.

    Raises ExportNotFoundError (no such export), ExportNotReadyError (not finished, failed, not
    verified, or the file is gone or changed size), ExportPathRefusedError (the row points
    anywhere else: outside the workspace, at the database, through a symlink...)."""
    info = get_export(db, int(export_id))
    if info.status != JobStatus.SUCCEEDED:
        raise ExportNotReadyError(f"export {export_id} is {info.status}; only finished exports can be downloaded")
    if info.verified is not True:
        raise ExportNotReadyError(f"export {export_id} was not verified; it is not offered for download")
    if not info.path:
        raise ExportNotReadyError(f"export {export_id} has no archive")
    path = confined_to_export(db, info.id, info.path)
    if not path.is_file():
        raise ExportNotReadyError(f"export {export_id}: its archive is missing from the workspace")
    if info.size_bytes is not None and path.stat().st_size != info.size_bytes:
        raise ExportNotReadyError(f"export {export_id}: the archive changed size since it was verified")
    return path


def confined_to_export(db: Database, export_id: int, relative: str) -> Path:
    """Resolve a row's path (symlinks included) and refuse it unless it lies inside the export's
    own folder, itself inside the workspace's exports folder."""
    root = db.workspace.export_dir(export_id).resolve()
    exports = db.workspace.exports_dir.resolve()
    candidate = (db.workspace.root / relative).resolve()
    if exports not in root.parents or root not in candidate.parents:
        raise ExportPathRefusedError(f"export {export_id}: its recorded path is outside its folder in the "
                                     "workspace; refusing to serve it")
    return candidate


def export_folder(db: Database, export_id: int) -> Path:
    """The unpacked model/adapter folder of a verified export (for local use: chat, CLI)."""
    info = get_export(db, export_id)
    if not info.folder:
        raise ExportNotReadyError(f"export {export_id} is {info.status} and not verified; no folder to use")
    return confined_to_export(db, export_id, info.folder)


# -- cancelling and deleting ----------------------------------------------------------------------
def cancel_export(db: Database, export_id: int) -> str:
    """Ask the export's job to stop; returns the job's status after the request."""
    info = get_export(db, export_id)
    if info.status in JobStatus.FINISHED or info.job_id is None:
        return info.status
    status = queue.request_cancel(db, info.job_id)
    sync_with_job(db, export_id)
    return status


def delete_export(db: Database, export_id: int) -> int:
    """Remove the export's files and row. Returns the bytes freed. Refuses a queued/running one."""
    info = get_export(db, export_id)
    if info.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise ExportBusyError(f"export {export_id} is {info.status}; cancel it first")
    freed = discard_files(db, export_id)
    with db.session() as s:
        export = s.get(Export, export_id)
        if export is not None:
            s.delete(export)
    return freed


def discard_files(db: Database, export_id: int, staging: str | None = None) -> int:
    """Delete ``exports/<id>/`` and, when given, the job's staging folder under ``tmp/``."""
    freed = 0
    targets = [db.workspace.export_dir(export_id)]
    if staging:
        targets.append(Path(staging))
    for target in targets:
        target = target.resolve()
        if not _is_removable(db, target):
            continue
        freed += sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(target, ignore_errors=True)
    return freed


def _is_removable(db: Database, target: Path) -> bool:
    # Only ever delete below exports/ or tmp/, never a path a row or payload could redirect elsewhere.
    allowed = (db.workspace.exports_dir.resolve(), db.workspace.tmp_dir.resolve())
    return target.is_dir() and any(a in target.parents for a in allowed)


# -- keeping the row in step with its job ---------------------------------------------------------
def sync_with_job(db: Database, export_id: int) -> None:
    """A row still queued/running whose job has ended takes the job's outcome (a job cancelled
    while queued, or killed without its on_finish hook, would otherwise look busy forever)."""
    with db.session() as s:
        export = s.get(Export, export_id)
        if export is None or export.status in JobStatus.FINISHED:
            return
        if export.job_id is None and utcnow() - export.created_at < UNLINKED_GRACE:
            return  # start_export is between creating the row and linking its job
        job = s.get(Job, export.job_id) if export.job_id else None
        if job is not None and job.status not in JobStatus.FINISHED:
            return
    finish_from_job(db, export_id, job)


def finish_from_job(db: Database, export_id: int, job: Job | None) -> None:
    """Record how the export ended. A job that did not succeed leaves no files behind."""
    status = job.status if job is not None else JobStatus.FAILED
    with db.session() as s:
        export = s.get(Export, export_id)
        if export is None:
            return
        if status == JobStatus.SUCCEEDED and export.status == JobStatus.SUCCEEDED and export.verified:
            return
        if status == JobStatus.SUCCEEDED:  # the job returned without recording a verified result
            status = JobStatus.FAILED
        verification = dict(export.verification or {})
        verification.setdefault("error", _job_error(job, status))
        export.status, export.verification = status, verification
        export.path = export.size_bytes = export.sha256 = None
        if export.verified is None:
            export.verified = False
    discard_files(db, export_id, staging=(job.progress or {}).get("staging") if job is not None else None)


def _job_error(job: Job | None, status: str) -> str:
    if job is None:
        return "the export's job is missing from the queue"
    if status == JobStatus.CANCELLED:
        return job.error or "cancelled"
    return job.error or "the export job ended without recording a verified result"


# -- naming ---------------------------------------------------------------------------------------
def folder_name(adapter: Adapter, kind: str) -> str:
    """A readable, filesystem-safe name: ``smollm2-135m-instruct-lora-run3-merged``."""
    base = adapter.base_model_ref.rstrip("/").split(":")[-1].split("/")[-1]
    origin = f"run{adapter.run_id}" if adapter.run_id is not None else f"adapter{adapter.id}"
    name = f"{base}-{adapter.method}-{origin}-{kind}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:120] or f"export-{kind}"
