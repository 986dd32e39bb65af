"""What a job's code sees: its payload, the database, a logger, progress and cancellation."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from jobs import queue
from jobs.services import WorkerServices
from storage.db import Database


class JobCancelled(Exception):
    """Raised by ``JobContext.check_cancel`` so a job unwinds cleanly when the user cancels."""


@dataclass
class JobContext:
    db: Database
    job_id: int
    kind: str
    payload: dict[str, Any]
    # the running worker's long-lived things (chat engine); a child process gets a fresh, empty one
    services: WorkerServices = field(default_factory=WorkerServices)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("jobs.job"))
    cancel_poll_s: float = 1.0
    _last_poll: float = field(default=0.0, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def workspace(self):
        return self.db.workspace

    def progress(self, fraction: float | None = None, message: str | None = None, **extra: Any) -> None:
        """Record where the job is (0..1 and a sentence); the UI polls it from the database."""
        fields: dict[str, Any] = dict(extra)
        if fraction is not None:
            fields["fraction"] = max(0.0, min(1.0, float(fraction)))
        if message is not None:
            fields["message"] = message
            self.log.info(message)
        queue.set_progress(self.db, self.job_id, **fields)

    def cancelled(self) -> bool:
        """True once the user asked to cancel; reads the database at most every ``cancel_poll_s``."""
        if not self._cancelled and time.monotonic() - self._last_poll >= self.cancel_poll_s:
            self._last_poll = time.monotonic()
            self._cancelled = queue.cancel_requested(self.db, self.job_id)
        return self._cancelled

    def check_cancel(self) -> None:
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled")
