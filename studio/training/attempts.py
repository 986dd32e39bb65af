"""A run's attempts: each time a worker ran it, from which step, to which, and why it ended.

``runs.attempts`` is a list of ``{"n", "trigger", "worker", "started", "ended", "why", "outcome",
"from_step", "to_step", "last_step"}``: ``from_step``/``to_step`` are the newest complete
checkpoint when the attempt began/ended, ``last_step`` the last logged step (what it trained up
to; the steps between ``to_step`` and ``last_step`` are trained again by the next attempt).

A training job whose worker died (its lease expired; not a crash of the job itself) is put back
in the queue and resumes from its newest complete checkpoint. Attempts that ended that way
in a row without a new complete checkpoint are capped (``FTS_MAX_IDLE_ATTEMPTS``, default 3), so a
job that kills its worker, e.g. by exhausting memory, is not retried in a loop; an attempt that
saved a checkpoint does not count (and ends the row). A resume by the user starts the count again.

Torch-free: the reaper (in any worker) and the UI read it.
"""
from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, select

from storage.models import Job, JobStatus, Run, RunMetric, utcnow
from studio.training import checkpoints

MAX_IDLE_ATTEMPTS_ENV = "FTS_MAX_IDLE_ATTEMPTS"
DEFAULT_MAX_IDLE_ATTEMPTS = 3
WORKER_LOST = "worker-lost"
START, RESUME, REQUEUED = "start", "resume", "requeued"


def max_idle_attempts() -> int:
    return max(1, int(os.environ.get(MAX_IDLE_ATTEMPTS_ENV) or DEFAULT_MAX_IDLE_ATTEMPTS))


def checkpoint_step(db: Any, run_id: int) -> int:
    """The step of the run's newest complete checkpoint (0: none)."""
    latest = checkpoints.latest_complete(db.workspace.run_dir(run_id) / "checkpoints")
    return (checkpoints.step_of(latest) or 0) if latest else 0


def _last_logged_step(s: Any, run_id: int) -> int | None:
    return s.execute(select(func.max(RunMetric.step)).where(RunMetric.run_id == run_id,
                                                           RunMetric.stage == "train")).scalar()


def _stamp(t) -> str:
    return t.replace(microsecond=0).isoformat(sep=" ")


def _trigger(previous: list[dict[str, Any]]) -> str:
    if not previous:
        return START
    return REQUEUED if previous[-1].get("requeued") else RESUME


def open_attempt(db: Any, run_id: int, job_id: int | None, from_step: int) -> None:
    """Called where the job begins (its child process): a new, open attempt on the run."""
    with db.session() as s:
        run = s.get(Run, run_id)
        job = s.get(Job, job_id) if job_id else None
        history = list(run.attempts or [])
        if history and "ended" not in history[-1]:  # its end was never recorded (should not happen)
            history[-1] = {**history[-1], "ended": None, "why": "unknown", "outcome": "unknown"}
        history.append({"n": len(history) + 1, "trigger": _trigger(history), "worker": job.worker_id if job else None,
                        "started": _stamp(utcnow()), "from_step": from_step})
        run.attempts = history  # a new list, so SQLAlchemy sees the JSON change


def close_attempt(db: Any, run_id: int, job: Job, outcome: str, why: str | None, requeued: bool = False,
                  fix: str | None = None) -> None:
    """Record how the open attempt ended. An attempt killed before it began gets a row too
    (its worker died while starting the job: it counts as one that made no progress).
    ``fix``: the memory fix the next attempt runs with, or the one suggested (out of memory)."""
    step = checkpoint_step(db, run_id)
    with db.session() as s:
        run = s.get(Run, run_id)
        history = list(run.attempts or [])
        if not history or "ended" in history[-1]:
            if job.started_at is None:
                return
            history.append({"n": len(history) + 1, "trigger": _trigger(history), "worker": job.worker_id,
                            "started": _stamp(job.started_at), "from_step": _step_before(history)})
        last = history[-1]
        history[-1] = {**last, "ended": _stamp(job.finished_at or utcnow()), "outcome": outcome, "why": why,
                       "to_step": step, "last_step": _last_logged_step(s, run_id), "requeued": requeued,
                       **({"fix": fix} if fix else {})}
        run.attempts = history


def _step_before(history: list[dict[str, Any]]) -> int:
    """Where an attempt that never began started from: where the previous one ended."""
    return (history[-1].get("to_step") or 0) if history else 0


def idle_attempts(history: list[dict[str, Any]]) -> int:
    """The attempts in a row, newest first, that ended with their worker's death and no new complete
    checkpoint; the count stops at one that made progress and at the user's start or resume."""
    count = 0
    for attempt in reversed(history):
        if attempt.get("outcome") != WORKER_LOST or (attempt.get("to_step") or 0) > (attempt.get("from_step") or 0):
            break
        count += 1
        if attempt.get("trigger") != REQUEUED:
            break
    return count


def _run_of(db: Any, job: Job) -> Run | None:
    run_id = (job.payload or {}).get("run_id")
    with db.session() as s:
        run = s.get(Run, run_id) if run_id else None
        return run or s.execute(select(Run).where(Run.job_id == job.id)).scalar()


def retry_after_worker_lost(db: Any, job: Job) -> tuple[bool, str | None]:
    """The reaper's question for a training job whose worker died: requeue it? (and why not).
    Counts the attempt that is ending now as the checkpoints on disk say."""
    run = _run_of(db, job)
    if run is None or job.cancel_requested:
        return False, None
    history = list(run.attempts or [])
    step = checkpoint_step(db, run.id)
    still_open = bool(history) and "ended" not in history[-1]
    closed = history[:-1] if still_open else history
    ending = history[-1] if still_open else {"trigger": _trigger(history), "from_step": _step_before(history)}
    idle = idle_attempts([*closed, {**ending, "outcome": WORKER_LOST, "to_step": step}])
    cap = max_idle_attempts()
    if idle >= cap:
        return False, (f"its worker died {idle} times in a row without a new complete checkpoint (the job may be "
                       f"what kills it, e.g. by exhausting memory); not retried again: resume to try once more")
    return True, None


def on_requeued(db: Any, job: Job) -> None:
    """The reaper put the job back in the queue: close the attempt and show the run as waiting."""
    run = _run_of(db, job)
    if run is None:
        return
    close_attempt(db, run.id, job, WORKER_LOST, job.error, requeued=True)
    with db.session() as s:
        row = s.get(Run, run.id)
        row.status, row.finished_at = JobStatus.QUEUED, None
        row.error = None
