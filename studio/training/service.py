"""Runs: plain functions over the database and the workspace, for the UI and the CLI.

    run_id = start_run(db, spec)      # validates (every problem at once), queues a "train" job
    cancel_run(db, run_id)            # stops within seconds, keeping the last complete checkpoint
    resume_run(db, run_id)            # requeues a failed/cancelled run; it continues from that checkpoint

Importing this module is cheap (no torch): the UI process calls it.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from jobs import queue
from storage.db import get_or_raise
from storage.models import Adapter, Job, JobStatus, Run, RunMetric
from studio.spec import RunSpec, SpecError, parse_spec
from studio.spec.checks import static_problems

TRAIN_JOB = "train"
RESUMABLE = (JobStatus.FAILED, JobStatus.CANCELLED)


class RunNotFound(LookupError):
    pass


class RunStateError(ValueError):
    """The run is not in a state that allows this (e.g. resuming a run that succeeded)."""


def check_spec(db: Any, spec: RunSpec | dict[str, Any] | str, *, local_paths: bool = True,
               preflight: bool = False) -> tuple[RunSpec | None, list[Any]]:
    """The typed spec and every problem with it: field errors, else the static checks, and with
    ``preflight=True`` also the worker's pre-flight run here (the CLI and tests on the machine
    that trains; never the web process, whose machine may not be the one that trains).
    ``local_paths=False`` (for specs from a browser): a ``data.path`` must be inside the workspace."""
    parsed, problems = parse_spec(spec)
    if parsed is None:
        return None, problems
    problems = static_problems(parsed, db, local_paths=local_paths)
    if preflight:
        from studio.training.preflight import preflight_problems

        data_refused = any(p.field.split(".")[0] == "data" for p in problems)
        seen = {(p.field, p.message) for p in problems}
        problems += [p for p in preflight_problems(parsed, db, read_data=not data_refused)
                     if (p.field, p.message) not in seen]
    return parsed, problems


def start_run(db: Any, spec: RunSpec | dict[str, Any] | str, *, local_paths: bool = True) -> int:
    """Validate, then create the run row (queued) and its job in one transaction. Raises SpecError."""
    parsed, problems = check_spec(db, spec, local_paths=local_paths)
    if problems:
        raise SpecError(problems)
    with db.session() as s:
        run = Run(name=parsed.display_name(), status=JobStatus.QUEUED, model_ref=parsed.model,
                  dataset_id=parsed.data.dataset_id, method=parsed.method.name, spec=parsed.to_dict(),
                  estimated_peak_bytes=_estimate(db, parsed))
        s.add(run)
        s.flush()
        # The job row is added in the same transaction (what queue.enqueue does), so a run is
        # never left queued without a job.
        job = Job(kind=TRAIN_JOB, payload={"run_id": run.id})
        s.add(job)
        s.flush()
        run.job_id = job.id
        run.output_dir = db.workspace.relative(db.workspace.run_dir(run.id))
        return run.id


def cancel_run(db: Any, run_id: int) -> str:
    """Ask the run to stop. Queued: cancelled at once. Running: stops after the current step."""
    run = get_run(db, run_id)
    if run.job_id is None or run.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return run.status
    job_status = queue.request_cancel(db, run.job_id)
    if job_status == JobStatus.CANCELLED:  # it never started: no worker will report back
        with db.session() as s:
            row = s.get(Run, run_id)
            row.status, row.error = JobStatus.CANCELLED, "cancelled before it started"
    return get_run(db, run_id).status


def resume_run(db: Any, run_id: int) -> int:
    """Queue a failed or cancelled run again with the same spec; training continues from its
    newest complete checkpoint (from the start if it had none). Returns the job id."""
    run = get_run(db, run_id)
    if run.status not in RESUMABLE:
        raise RunStateError(f"run {run_id} is {run.status}; only failed or cancelled runs can be resumed")
    _, problems = check_spec(db, run.spec, local_paths=True)  # it was accepted once, by whoever started it
    if problems:
        raise SpecError(problems)
    job = queue.get(db, run.job_id) if run.job_id else None
    if job is None or job.status not in JobStatus.FINISHED:
        raise RunStateError(f"run {run_id}'s job is still {job.status if job else 'missing'}; wait until it ends")
    queue.requeue(db, job.id)
    with db.session() as s:
        row = s.get(Run, run_id)
        row.status, row.error, row.finished_at = JobStatus.QUEUED, None, None
    return job.id


def move_run(db: Any, run_id: int, delta: int) -> str:
    """Move a queued run up (delta > 0) or down in the queue, as a sentence for the user."""
    run = get_run(db, run_id)
    if run.status != JobStatus.QUEUED or run.job_id is None:
        raise RunStateError(f"run {run_id} is {run.status}; only a queued run can move in the queue")
    try:
        priority = queue.change_priority(db, run.job_id, delta)
    except ValueError:  # a worker took it meanwhile
        raise RunStateError(f"run {run_id} has started; only a queued run can move in the queue") from None
    ahead = queue.jobs_ahead(db, queue.get(db, run.job_id))
    return f"Run #{run_id} now has priority {priority}; {ahead} job{'s' if ahead != 1 else ''} ahead of it."


def queue_text(db: Any, run: Run) -> str:
    """Where a queued run stands: priority and jobs ahead (empty for a run that is not queued)."""
    if run.status != JobStatus.QUEUED or run.job_id is None:
        return ""
    job = queue.get(db, run.job_id)
    return f"priority {job.priority}, {queue.jobs_ahead(db, job)} ahead in the queue"


def list_runs(db: Any, limit: int = 200) -> list[Run]:
    """Newest first."""
    with db.session() as s:
        return list(s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))


def get_run(db: Any, run_id: int) -> Run:
    with db.session() as s:
        return get_or_raise(s, Run, run_id, RunNotFound)


def run_spec(db: Any, run_id: int) -> RunSpec:
    return RunSpec.model_validate(get_run(db, run_id).spec)


def run_metrics(db: Any, run_id: int, stage: str | None = None) -> list[RunMetric]:
    """Metric rows in the order they were written (stage: "train", "eval", "load", ...)."""
    with db.session() as s:
        q = select(RunMetric).where(RunMetric.run_id == run_id)
        if stage is not None:
            q = q.where(RunMetric.stage == stage)
        return list(s.scalars(q.order_by(RunMetric.id)))


def run_progress(db: Any, run_id: int) -> dict[str, Any]:
    """The live progress of the run's job (fraction, message, stage, step, total_steps)."""
    run = get_run(db, run_id)
    return dict(queue.get(db, run.job_id).progress or {}) if run.job_id else {}


def run_adapters(db: Any, run_id: int) -> list[Adapter]:
    with db.session() as s:
        return list(s.scalars(select(Adapter).where(Adapter.run_id == run_id).order_by(Adapter.id)))


def rename_run(db: Any, run_id: int, name: str) -> Run:
    name = (name or "").strip()
    if not 0 < len(name) <= 200:
        raise ValueError("a run name must be 1 to 200 characters")
    with db.session() as s:
        run = get_or_raise(s, Run, run_id, RunNotFound)
        run.name = name
        for adapter in s.scalars(select(Adapter).where(Adapter.run_id == run_id)):
            adapter.name = name
        return run


def delete_run(db: Any, run_id: int) -> None:
    """Remove the run, its metrics, its adapters and its files. A queued or running run must be
    cancelled first. Files are moved aside first, so a failed delete loses nothing."""
    run = get_run(db, run_id)
    if run.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise RunStateError(f"run {run_id} is {run.status}; cancel it before deleting it")
    with db.workspace.set_aside(db.workspace.run_dir(run_id), f"deleted-run-{run_id}"), db.session() as s:
        s.execute(delete(Adapter).where(Adapter.run_id == run_id))
        row = s.get(Run, run_id)
        if row is not None:
            s.delete(row)


QUEUE_TIME_GPU = "RTX 4090 24 GB"  # the Train tab's default card


def _estimate(db: Any, spec: RunSpec) -> int | None:
    """The estimator's GPU peak for this spec, shown while the run waits; the job replaces it with
    the estimate for the device it actually trains on. Never blocks a run."""
    from studio import estimate as est
    from studio.planning import dataset_images_per_sample, estimate_for_device

    precision = "bf16" if spec.train.precision == "auto" else spec.train.precision
    card = est.find_card(QUEUE_TIME_GPU)  # no torch here: the web process plans for a typical GPU
    return estimate_for_device(spec, precision, on_gpu=True, images=dataset_images_per_sample(db, spec),
                               capacity_bytes=card.capacity_bytes if card else 24 * 2**30)
