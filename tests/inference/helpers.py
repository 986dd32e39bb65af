"""Helpers for chat tests: adapter rows, and running chat jobs the way the worker does (inline)."""
from __future__ import annotations

from tests.processes import wait_for

import shutil
import threading
from pathlib import Path

from jobs.services import WorkerServices
from jobs.worker import run_inline
from storage.db import Database
from storage.models import Adapter, Run


def add_adapter(db: Database, folder: Path | None, base_ref: str, name: str, *, vision: dict | None = None,
                rel_path: str | None = None) -> int:
    """An Adapter row (and a Run row holding the vision settings, if given) for a copy of ``folder``."""
    with db.session() as s:
        run = Run(name=name, model_ref=base_ref, method="lora", spec={"vision": vision} if vision else {})
        s.add(run)
        s.flush()
        rel = rel_path or f"runs/{run.id}/adapter"
        if folder is not None:
            shutil.copytree(folder, db.workspace.root / rel)
        row = Adapter(run_id=run.id, name=name, method="lora", base_model_ref=base_ref, path=rel)
        s.add(row)
        s.flush()
        return row.id


def answer(db: Database, job_id: int, services: WorkerServices) -> dict:
    """Run a chat job as the worker would (inline, with the worker's services) and return the final poll state."""
    from studio.inference import service

    run_inline(db, job_id, services)
    return service.poll(db, job_id)


class Background:
    """Run a chat job in a thread (the worker) while the test polls it (the UI)."""

    def __init__(self, db: Database, job_id: int, services: WorkerServices):
        self.db, self.job_id, self.services, self.outcome = db, job_id, services, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.outcome = run_inline(self.db, self.job_id, self.services)

    def __enter__(self) -> "Background":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=120)


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.01):
    return wait_for(predicate, timeout, interval)
