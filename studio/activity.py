"""What the studio is doing: jobs as the UI and CLI show them (plain rows, no ORM objects)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from jobs import queue
from storage.db import Database
from storage.models import Job, JobStatus, utcnow

KIND_LABELS = {"train": "Training", "models.prepare": "Prepare model", "datasets.stats": "Dataset statistics",
               "chat.message": "Chat", "chat.compare": "Batch compare", "export": "Export",
               "system.echo": "Echo (diagnostic)", "system.sleep": "Sleep (diagnostic)"}


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    status: str
    progress: str
    created: str
    duration: str
    error: str


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _duration(job: Job, now: dt.datetime) -> float | None:
    if job.started_at is None:
        return None
    return ((job.finished_at or now) - job.started_at).total_seconds()


def _progress_text(job: Job) -> str:
    p = job.progress or {}
    parts = []
    if job.status == JobStatus.RUNNING and p.get("fraction") is not None:
        parts.append(f"{100 * p['fraction']:.0f}%")
    if p.get("message"):
        parts.append(str(p["message"]))
    return " ".join(parts)


def job_rows(db: Database, limit: int = 50) -> list[JobRow]:
    now = utcnow()
    return [JobRow(id=j.id, kind=KIND_LABELS.get(j.kind, j.kind), status=j.status, progress=_progress_text(j),
                   created=f"{j.created_at:%Y-%m-%d %H:%M:%S}", duration=format_duration(_duration(j, now)),
                   error=(j.error or "").splitlines()[-1][:200] if j.error else "")
            for j in queue.list_jobs(db, limit)]


def job_log_tail(db: Database, job_id: int, max_bytes: int = 8000) -> str:
    """The end of a job's log file (isolated jobs only), for the live view."""
    path = db.workspace.job_log(job_id)
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - max_bytes))
        return f.read().decode("utf-8", errors="replace")


def job_log_last_lines(db: Database, job_id: int, lines: int = 60, max_bytes: int = 64_000) -> str:
    """The last ``lines`` complete lines of a job's log. A resumed run appends to the same log, so
    the panel must show the end of the file, not the start of a byte window (which would show an
    earlier attempt's lines first)."""
    text = job_log_tail(db, job_id, max_bytes)
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def cancel_job(db: Database, job_id: int) -> str:
    return queue.request_cancel(db, job_id)


@dataclass(frozen=True)
class JobState:
    status: str
    fraction: float | None
    message: str
    result: dict | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in JobStatus.FINISHED


def job_state(db: Database, job_id: int) -> JobState:
    j = queue.get(db, job_id)
    p = j.progress or {}
    return JobState(j.status, p.get("fraction"), p.get("message") or "", j.result, j.error)


def poll_until(fetch, done, poll_s: float = 0.5, timeout_s: float = 600):
    """Yield ``fetch()`` every ``poll_s`` seconds until ``done(state)`` (the last state is yielded
    too) or ``timeout_s`` passes: the one poll loop of the UI's streaming generators and the CLI."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        state = fetch()
        yield state
        if done(state) or time.monotonic() > deadline:
            return
        time.sleep(poll_s)


def wait_for_job(db: Database, job_id: int, poll_s: float = 0.5, timeout_s: float = 600):
    """Yield the job's state until it finishes (for UI generators and the CLI)."""
    yield from poll_until(lambda: job_state(db, job_id), lambda state: state.finished, poll_s, timeout_s)
