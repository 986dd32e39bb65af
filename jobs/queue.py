"""The job queue: plain functions over the ``jobs`` table.

Claiming is a compare-and-set (``UPDATE ... WHERE id=? AND status='queued'``), so two workers on
one database can never both win a job; on PostgreSQL the candidate is picked with
``FOR UPDATE SKIP LOCKED`` so workers do not queue up behind each other's row locks.
A claimed job holds a lease that the worker's heartbeat renews; ``reap_expired`` finishes (or
requeues, while attempts remain) jobs whose worker stopped renewing.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select, update

from storage.db import Database
from storage.models import Job, JobStatus, utcnow

DEFAULT_LEASE_S = 30.0


class JobNotFound(LookupError):
    pass


def enqueue(db: Database, kind: str, payload: dict[str, Any] | None = None, *, priority: int | None = None,
            max_attempts: int = 1) -> int:
    """Add a job; ``priority`` defaults to its kind's (``jobs.kinds``: chat > export > training)."""
    if priority is None:
        from jobs.kinds import KINDS

        priority = KINDS[kind].priority if kind in KINDS else 0
    with db.session() as s:
        job = Job(kind=kind, payload=payload or {}, priority=priority, max_attempts=max_attempts)
        s.add(job)
        s.flush()
        return job.id


def get(db: Database, job_id: int) -> Job:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return job


def claim(db: Database, worker_id: str, kinds: Iterable[str] | None = None,
          lease_s: float = DEFAULT_LEASE_S) -> Job | None:
    """Atomically take the next queued job (highest priority, then oldest) or return None."""
    kinds = list(kinds) if kinds is not None else None
    for _ in range(5):  # lost races retry with the next candidate
        with db.session() as s:
            q = select(Job.id).where(Job.status == JobStatus.QUEUED)
            if kinds is not None:
                q = q.where(Job.kind.in_(kinds))
            q = q.order_by(Job.priority.desc(), Job.id).limit(1).with_for_update(skip_locked=True)
            job_id = s.execute(q).scalar()
        if job_id is None:
            return None
        job = claim_job(db, job_id, worker_id, lease_s)
        if job is not None:
            return job
    return None


def claim_job(db: Database, job_id: int, worker_id: str, lease_s: float = DEFAULT_LEASE_S) -> Job | None:
    """Take one specific queued job; None if someone else got it first (compare-and-set)."""
    now = utcnow()
    with db.session() as s:
        won = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, worker_id=worker_id, started_at=now, heartbeat_at=now,
                    lease_expires_at=now + dt.timedelta(seconds=lease_s), attempts=Job.attempts + 1,
                    finished_at=None, exit_code=None, exit_signal=None, error=None)
        ).rowcount
    return get(db, job_id) if won == 1 else None


def heartbeat(db: Database, job_id: int, worker_id: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Renew the lease. Returns False if the job is no longer ours (reaped or finished)."""
    now = utcnow()
    with db.session() as s:
        n = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING)
            .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease_s))
        ).rowcount
    return n == 1


def set_progress(db: Database, job_id: int, **progress: Any) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.progress = {**(job.progress or {}), **progress}


def set_pid(db: Database, job_id: int, pid: int | None, log_path: str | None = None) -> None:
    with db.session() as s:
        values: dict[str, Any] = {"pid": pid}
        if log_path is not None:
            values["log_path"] = log_path
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def finish(db: Database, job_id: int, worker_id: str | None, status: str, *, error: str | None = None,
           exit_code: int | None = None, exit_signal: str | None = None,
           result: dict[str, Any] | None = None) -> bool:
    """Record the outcome. Only the worker holding the job may finish it (None: any holder)."""
    assert status in JobStatus.FINISHED
    with db.session() as s:
        q = update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        if worker_id is not None:
            q = q.where(Job.worker_id == worker_id)
        n = s.execute(q.values(status=status, finished_at=utcnow(), error=error, exit_code=exit_code,
                               exit_signal=exit_signal, result=result, lease_expires_at=None, pid=None)).rowcount
    return n == 1


def request_cancel(db: Database, job_id: int) -> str:
    """Ask a job to stop. A queued job is cancelled at once; a running one at its next check."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        if job.status == JobStatus.QUEUED:
            job.status = JobStatus.CANCELLED
            job.cancel_requested = True
            job.finished_at = utcnow()
        elif job.status == JobStatus.RUNNING:
            job.cancel_requested = True
        return job.status


def cancel_requested(db: Database, job_id: int) -> bool:
    with db.session() as s:
        return bool(s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar())


def requeue(db: Database, job_id: int) -> None:
    """Put a finished (failed/cancelled) job back in the queue, e.g. to resume a run."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        if job.status not in JobStatus.FINISHED:
            raise ValueError(f"job {job_id} is {job.status}; only finished jobs can be requeued")
        job.status = JobStatus.QUEUED
        job.cancel_requested = False
        job.max_attempts = job.attempts + 1
        job.worker_id = None


LEASE_EXPIRED = "stopped renewing its lease"  # in the error of every job the reaper ends or requeues

RetryPolicy = Callable[[Job], "tuple[bool, str | None] | None"]


def reap_expired(db: Database, now: dt.datetime | None = None,
                 retry_policy: RetryPolicy | None = None) -> list[int]:
    """Fail or requeue running jobs whose lease expired (their worker died or hung).

    By default a job is requeued while attempts remain; ``retry_policy(job)`` may decide instead
    (``(retry, note)``; None: the default), e.g. training requeues while its attempts make progress."""
    now = now or utcnow()
    reaped = []
    with db.session() as s:
        expired = s.execute(
            select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        ).scalars().all()
    for job in expired:  # the policy reads the database itself: outside our transaction
        reason = (f"worker {job.worker_id} {LEASE_EXPIRED} (expired "
                  f"{job.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC): the worker process died or hung")
        decided = retry_policy(job) if retry_policy else None
        retry, note = decided if decided is not None else (
            job.attempts < job.max_attempts and not job.cancel_requested, None)
        values: dict[str, Any] = dict(worker_id=None, lease_expires_at=None, pid=None,
                                      error=f"{reason}; {note}" if note else reason)
        if retry:
            values.update(status=JobStatus.QUEUED)
        else:
            values.update(status=JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED,
                          finished_at=now)
        with db.session() as s:
            n = s.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.RUNNING,
                                            Job.worker_id == job.worker_id,
                                            Job.lease_expires_at < now).values(**values)).rowcount
        if n:
            reaped.append(job.id)
    return reaped


def expire_lease(db: Database, job_id: int, worker_id: str) -> bool:
    """End the lease of a running job now (its worker is known to be dead), so the reaper takes it."""
    with db.session() as s:
        n = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker_id == worker_id)
                      .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))).rowcount
    return n == 1


def running_jobs(db: Database) -> list[Job]:
    with db.session() as s:
        return list(s.execute(select(Job).where(Job.status == JobStatus.RUNNING)).scalars())


def queued_jobs(db: Database, kinds: Iterable[str] | None = None, limit: int = 100) -> list[Job]:
    """The queue in the order it is served: highest priority first, then oldest."""
    with db.session() as s:
        q = select(Job).where(Job.status == JobStatus.QUEUED)
        if kinds is not None:
            q = q.where(Job.kind.in_(list(kinds)))
        return list(s.execute(q.order_by(Job.priority.desc(), Job.id).limit(limit)).scalars())


def change_priority(db: Database, job_id: int, delta: int) -> int:
    """Move a queued job up (delta > 0) or down in the queue; returns its new priority. Higher
    priorities are served first, first come first served within one."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        if job.status != JobStatus.QUEUED:
            raise ValueError(f"job {job_id} is {job.status}; only a queued job can move in the queue")
        job.priority += delta
        return job.priority


def jobs_ahead(db: Database, job: Job) -> int:
    """How many queued jobs are served before this one."""
    from sqlalchemy import func

    with db.session() as s:
        return s.execute(select(func.count(Job.id)).where(
            Job.status == JobStatus.QUEUED,
            (Job.priority > job.priority) | ((Job.priority == job.priority) & (Job.id < job.id)))).scalar() or 0


def list_jobs(db: Database, limit: int = 100) -> list[Job]:
    with db.session() as s:
        return list(s.execute(select(Job).order_by(Job.id.desc()).limit(limit)).scalars())
