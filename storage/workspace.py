"""The workspace file layout, and the rule for writing into it.

Every file the studio creates lives under one folder. Things are built under ``tmp/`` and renamed
into place only when complete, so a crash never leaves a half-written dataset, adapter or export
where a reader would take it for done (rename is atomic within one filesystem).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator


class OutsideWorkspaceError(ValueError):
    """A path from user input points outside the workspace."""


class Workspace:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    # -- layout ------------------------------------------------------------------------------
    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def dataset_dir(self, dataset_id: int) -> Path:
        return self.datasets_dir / str(dataset_id)

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / str(run_id)

    def export_dir(self, export_id: int) -> Path:
        return self.exports_dir / str(export_id)

    def job_log(self, job_id: int) -> Path:
        return self.logs_dir / "jobs" / f"{job_id}.log"

    def ensure(self) -> "Workspace":
        for d in (self.root, self.datasets_dir, self.runs_dir, self.exports_dir, self.models_dir,
                  self.uploads_dir, self.logs_dir / "jobs", self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # -- safety ------------------------------------------------------------------------------
    def confine(self, path: str | os.PathLike) -> Path:
        """Resolve a user-supplied path and refuse it unless it lies inside the workspace."""
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        resolved = p.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise OutsideWorkspaceError(
                f"{path} is outside the workspace {self.root}; upload the file or copy it into the workspace first."
            )
        return resolved

    def relative(self, path: str | os.PathLike) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    # -- atomic creation ---------------------------------------------------------------------
    @contextlib.contextmanager
    def staging_dir(self, final: Path) -> Iterator[Path]:
        """Yield a fresh folder under tmp/; on success rename it to ``final``, on error delete it."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        stage = self.tmp_dir / f"{final.name}.{uuid.uuid4().hex[:8]}.partial"
        stage.mkdir(parents=True)
        try:
            yield stage
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                raise FileExistsError(f"{final} already exists")
            os.replace(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def scratch_dir(self, label: str) -> Iterator[Path]:
        """A fresh folder under tmp/ for a build whose final path is not known yet (e.g. named by a
        row id the database hands out later); deleted on exit unless the caller moved it away."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        stage = self.tmp_dir / f"{label}.{uuid.uuid4().hex[:8]}.partial"
        stage.mkdir()
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    @contextlib.contextmanager
    def set_aside(self, folder: Path, label: str) -> Iterator[None]:
        """Delete ``folder`` only if the block succeeds: it is first renamed into tmp/ (atomic), put
        back if the block raises (e.g. the row could not be deleted), and removed afterwards."""
        aside = self.tmp_dir / f"{label}.{uuid.uuid4().hex[:8]}.partial"
        moved = folder.exists()
        if moved:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            os.replace(folder, aside)
        try:
            yield
        except BaseException:
            if moved:
                os.replace(aside, folder)
            raise
        shutil.rmtree(aside, ignore_errors=True)

    def clean_stale_tmp(self, older_than_s: float = 6 * 3600) -> int:
        """Remove leftovers of builds that crashed. Only old ones: another process may be building."""
        n = 0
        cutoff = time.time() - older_than_s
        if self.tmp_dir.exists():
            for p in self.tmp_dir.iterdir():
                if p.name.endswith(".partial") and p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    n += 1
        return n


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
