"""First-start chores the launcher asks for: make sure the built-in model gets prepared."""
from __future__ import annotations

from sqlalchemy import select

from jobs import queue
from storage.db import Database
from storage.models import Job, JobStatus

DEFAULT_MODEL_REF = "builtin:smollm2-135m-instruct"


def ensure_model_prepared(db: Database, ref: str = DEFAULT_MODEL_REF) -> int:
    """Queue preparation of a built-in model (a no-op job when it is cached); reuse a pending one."""
    with db.session() as s:
        pending = s.execute(
            select(Job.id).where(Job.kind == "models.prepare",
                                 Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .order_by(Job.id.desc())
        ).scalars().all()
        for job_id in pending:
            if (s.get(Job, job_id).payload or {}).get("ref") == ref:
                return job_id
    return queue.enqueue(db, "models.prepare", {"ref": ref}, priority=10)
