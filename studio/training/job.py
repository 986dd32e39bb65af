"""The "train" job: what a worker's child process runs for a run, and how the run row follows the job.

``run_training_job`` trains into ``<workspace>/runs/<id>/`` (resuming from the newest complete
checkpoint when the run was cancelled or failed before), then records the adapter and the final
numbers. The run's *status* is set only by ``on_training_job_finished``, which the worker (or the
reaper, when the worker died) calls with the job's final row: one source of truth, so a run can
never say "running" after its job has ended.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from jobs import oom
from jobs.context import JobCancelled, JobContext
from storage.models import Adapter, JobStatus, Run, RunMetric, utcnow
from jobs.queue import LEASE_EXPIRED
from studio.training import attempts, checkpoints, memory_fixes
from studio.training.recipe import ADAPTER, CHECKPOINTS, TrainResult
from studio.spec import RunSpec

log = logging.getLogger("studio.training.job")


class PreflightRefused(RuntimeError):
    """The worker's pre-flight found problems; they are on the run row (``Run.problems``)."""


def run_training_job(ctx: JobContext) -> dict[str, Any]:
    run_id = int(ctx.payload["run_id"])
    spec, run_dir = begin(ctx.db, run_id, ctx.job_id)
    preflight(ctx.db, run_id, spec)
    if spec.train.num_processes > 1:
        from studio.training.distributed import launch

        result = launch(ctx, run_id, spec.train.num_processes)
    else:
        from studio.training.recipe import train
        from studio.training.reporting import DbReporter

        record_device_estimate(ctx.db, run_id, spec)
        oom.apply_test_memory_cap()  # tests only: a real allocation failure beyond a headroom
        result = train(spec, run_dir, DbReporter(ctx, run_id), db=ctx.db)
    record_numbers(ctx.db, run_id, result)
    if result.status == "cancelled":
        raise JobCancelled(f"cancelled at step {result.global_step} of {result.total_steps}; the last complete "
                           "checkpoint is kept: resume to continue")
    adapter_id = record_adapter(ctx.db, run_id, spec, Path(result.adapter_dir))
    return {"run_id": run_id, "adapter_id": adapter_id, "final_loss": result.final_loss,
            "final_eval_loss": result.final_eval_loss, "steps": result.global_step,
            "resumed_from_step": result.resumed_from_step, "peak_memory_bytes": result.peak_memory_bytes,
            "tokens_per_s": result.tokens_per_s, "model": result.model, "data": result.data}


def begin(db: Any, run_id: int, job_id: int | None = None) -> tuple[RunSpec, Path]:
    """Mark the run running, open its attempt, and forget metrics that the resumed training will
    produce again."""
    run_dir = db.workspace.run_dir(run_id)
    resume = checkpoints.latest_complete(run_dir / CHECKPOINTS)
    resume_step = checkpoints.step_of(resume) if resume else 0
    with db.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        run.status, run.error, run.finished_at, run.problems = JobStatus.RUNNING, None, None, None
        run.started_at = run.started_at or utcnow()
        run.output_dir = db.workspace.relative(run_dir)
        s.execute(delete(RunMetric).where(RunMetric.run_id == run_id, RunMetric.stage.in_(("train", "eval")),
                                          RunMetric.step > resume_step))
        spec = RunSpec.model_validate(run.spec)
    attempts.open_attempt(db, run_id, job_id, resume_step)
    return spec, run_dir


def preflight(db: Any, run_id: int, spec: RunSpec) -> None:
    """The checks only this machine can make (device, model config, every row), before step one.
    A refusal is stored on the run row and fails the job with every problem in its message."""
    from studio.training.preflight import preflight_problems

    problems = preflight_problems(spec, db)
    with db.session() as s:
        s.get(Run, run_id).problems = [p.to_dict() for p in problems] or None
    if problems:
        lines = "; ".join(str(p) for p in problems)
        raise PreflightRefused(f"the worker's pre-flight refused this run ({len(problems)} problem(s)): {lines}")


def record_device_estimate(db: Any, run_id: int, spec: RunSpec) -> None:
    """Replace the queue-time (GPU) estimate by one for the device this process trains on, so the
    run's measured peak is compared like with like (on CPU: the process's footprint so far plus
    the parts that live in RAM)."""
    import psutil

    from studio.planning import dataset_images_per_sample, estimate_for_device
    from studio.training.device import has_cuda, resolve_precision

    images = dataset_images_per_sample(db, spec)
    on_gpu = has_cuda()
    if not on_gpu:
        # The baseline is the process's footprint before the model loads. ``train`` imports the
        # training stack first (measured: RSS 539 MiB at job start, 895 MiB just before
        # from_pretrained -- ~350 MiB of transformers/trl/peft/datasets code and data); import it
        # now, as train() is about to, so the baseline is taken at the moment the estimate assumes.
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401
        from transformers import Trainer  # noqa: F401 - lazily imported submodules count too
    baseline = 0 if on_gpu else psutil.Process().memory_info().rss
    estimate = estimate_for_device(spec, resolve_precision(spec.train.precision), on_gpu, baseline, images)
    if estimate:
        with db.session() as s:
            s.get(Run, run_id).estimated_peak_bytes = estimate


def record_numbers(db: Any, run_id: int, result: TrainResult) -> None:
    with db.session() as s:
        run = s.get(Run, run_id)
        run.final_loss = result.final_loss
        run.final_eval_loss = result.final_eval_loss
        run.measured_peak_bytes = max(run.measured_peak_bytes or 0, result.peak_memory_bytes or 0)


def record_adapter(db: Any, run_id: int, spec: RunSpec, adapter_dir: Path) -> int:
    size = sum(p.stat().st_size for p in adapter_dir.rglob("*") if p.is_file())
    rel = db.workspace.relative(adapter_dir)
    with db.session() as s:
        run = s.get(Run, run_id)
        adapter = s.execute(select(Adapter).where(Adapter.run_id == run_id, Adapter.path == rel)).scalar()
        if adapter is None:  # a retried job must not register the same adapter twice
            adapter = Adapter(run_id=run_id, name=run.name, method=spec.method.name, base_model_ref=spec.model,
                              path=rel)
            s.add(adapter)
        adapter.size_bytes = size
        s.flush()
        return adapter.id


def on_training_job_finished(db: Any, job: Any) -> None:
    """Make the run say how its job ended: succeeded, failed (with the reason) or cancelled."""
    run_id = (job.payload or {}).get("run_id")
    with db.session() as s:
        run = s.get(Run, run_id) if run_id else None
        if run is None:
            run = s.execute(select(Run).where(Run.job_id == job.id)).scalar()
        if run is None:
            log.warning("job %s finished but no run refers to it", job.id)
            return
        run_id = run.id
    if memory_fixes.after_training_job(db, job, run_id):  # out of memory: retried with a fix, or failed
        return
    lost = job.status == JobStatus.FAILED and LEASE_EXPIRED in (job.error or "")
    attempts.close_attempt(db, run_id, job, attempts.WORKER_LOST if lost else job.status, job.error)
    with db.session() as s:
        run = s.get(Run, run_id)
        run.status = job.status
        run.finished_at = job.finished_at or utcnow()
        if job.status == JobStatus.SUCCEEDED:
            run.error = None
        elif job.status == JobStatus.CANCELLED:
            run.error = job.error or "cancelled"
        else:
            run.error = job.error or "the training job failed without a message (see the job log)"


def adapter_dir(db: Any, run_id: int) -> Path:
    return db.workspace.run_dir(run_id) / ADAPTER
