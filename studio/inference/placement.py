"""A chat that does not fit beside the jobs running on the worker's GPU: who holds the memory, and
the user's two choices -- wait for it, or answer on the CPU (slower, but now).

The worker writes why a queued job waits into the job's progress (``jobs.devices.Budget.blocking``:
the device, what the job needs, what is free, and who holds the rest). This module names the
holders for people ("run 'sft on smollm2' holds 14.0 GiB of GPU 0") and moves the waiting chat job to
the CPU (``payload.device = "cpu"``: the worker then gives it no GPU memory and the CPU chat engine
answers it). Torch-free: the UI process calls it.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import update

from jobs import queue
from storage.db import Database
from storage.models import Job, JobStatus, Run
from studio.inference.errors import ChatError

CHAT_KINDS = ("chat.message", "chat.compare")
GIB = 1024 ** 3


def memory_wait(db: Database, job_id: int) -> dict[str, Any] | None:
    """For a queued chat job that waits for memory: ``{"device", "needs", "free", "holders": [{"name",
    "bytes", "ref"}], "text", "wait_chosen"}``; None when it does not wait for memory."""
    job = queue.get(db, job_id)
    progress = job.progress or {}
    memory = progress.get("memory")
    if job.kind not in CHAT_KINDS or job.status != JobStatus.QUEUED or not progress.get("waiting") or not memory:
        return None
    holders = [{**h, "name": _name(db, h)} for h in memory.get("holders") or []]
    device = memory["device"]
    held = [f"{h['name']} holds {_gib(h['bytes'])} of {device}" for h in holders]
    need = f"the chat model needs {_gib(memory['needs'])}, {_gib(memory['free'])} free"
    return {"device": device, "needs": memory["needs"], "free": memory["free"], "holders": holders,
            "text": "; ".join([*held, need]), "wait_chosen": bool(progress.get("wait_chosen")),
            "can_use_cpu": memory.get("kind") == "gpu"}  # a CPU worker's chat waits for RAM: no other place


def keep_waiting(db: Database, job_id: int) -> None:
    """The user chose to wait: the job stays queued for the GPU; the offer is not made again."""
    _queued_chat(db, job_id)
    queue.set_progress(db, job_id, wait_chosen=True)


def use_cpu(db: Database, job_id: int) -> None:
    """Answer this queued chat on the CPU instead: same job, now asking for the CPU (the worker
    starts it at once, beside the GPU's jobs). Raises ChatError if it started meanwhile."""
    job = _queued_chat(db, job_id)
    if ((job.progress or {}).get("memory") or {}).get("kind") == "cpu":
        raise ChatError("this worker has no GPU: the chat already waits for the CPU's memory")
    payload = {**(job.payload or {}), "device": "cpu"}
    progress = {**(job.progress or {}), "waiting": None, "memory": None, "message": "moved to the CPU: starting"}
    with db.session() as s:
        moved = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                          .values(payload=payload, progress=progress)).rowcount
    if moved != 1:
        raise ChatError("the chat has already started on the GPU (or was stopped)")


def _queued_chat(db: Database, job_id: int) -> Job:
    job = queue.get(db, job_id)
    if job.kind not in CHAT_KINDS:
        raise ChatError(f"job {job_id} is a {job.kind} job, not a chat")
    if job.status != JobStatus.QUEUED:
        raise ChatError(f"the chat is {job.status}, no longer waiting")
    return job


def _name(db: Database, holder: dict[str, Any]) -> str:
    """"run 'sft lora on smollm2'", "export 4", "the chat model"."""
    kind, _, ident = (holder.get("ref") or "").partition(":")
    if kind == "run" and ident.isdigit():
        with db.session() as s:
            run = s.get(Run, int(ident))
            if run is not None:
                return f"run '{run.name}'"
    if kind:
        return f"{kind} {ident}"
    label = holder.get("label") or "a job"
    return "the chat model" if label == "chat model" else label


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"
