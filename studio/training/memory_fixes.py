"""A run that ran out of memory: recorded as such, and retried once with the estimator's next fix
when the spec allows it (``train.auto_memory_fix``), else failed with the fix to try.

Automatic fixes keep what the run learns (model, method, data, effective batch): gradient
checkpointing on, or a smaller batch with more accumulation -- the estimator's own fixes, in its
order, with its estimated peak before and after (the other fixes it knows, QLoRA or a shorter
cut-off, change the run: they are suggested, never applied by themselves).
The attempt history on the run says "out of memory at step 3 -> retried with batch 2 x
accumulation 4"; the retry resumes from the newest complete checkpoint, if any.

Torch-free: runs where the job's end is recorded (the worker, or the reaper).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import yaml

from jobs import oom, queue
from storage.models import JobStatus, Run
from studio.spec import RunSpec
from studio.training import attempts

log = logging.getLogger("studio.training.memory_fixes")

OUTCOME = "out of memory"  # the attempt's outcome
RETRIED = "retried with"


@dataclass(frozen=True)
class MemoryFix:
    change: str  # "batch 2 x accumulation 4" | "gradient checkpointing on"
    train: dict[str, Any] = field(default_factory=dict)  # the train settings it sets
    before_bytes: int | None = None  # estimated peaks, when the estimator knows the model
    after_bytes: int | None = None

    def apply(self, spec: RunSpec) -> RunSpec:
        return spec.model_copy(update={"train": spec.train.model_copy(update=self.train)})

    def text(self) -> str:
        if self.before_bytes and self.after_bytes:
            return f"{self.change} (estimated peak {self.before_bytes / 2 ** 30:.2f} -> {self.after_bytes / 2 ** 30:.2f} GiB)"
        return self.change


def _checkpointing_fix() -> MemoryFix:
    return MemoryFix("gradient checkpointing on", {"gradient_checkpointing": True})


def _batch_fix(batch: int, accum: int) -> MemoryFix:
    return MemoryFix(f"batch {batch} x accumulation {accum}", {"batch_size": batch, "grad_accum": accum})


def next_fix(spec: RunSpec, checkpointing: bool | None, images: int = 0) -> MemoryFix | None:
    """The next automatic fix for ``spec`` (``checkpointing``: what the attempt that ran out of memory
    used; None: unknown), with the estimator's peak before and after it. None when nothing automatic
    is left (batch 1 with checkpointing on)."""
    fix = _rule_fix(spec, checkpointing)
    if fix is None:
        return None
    try:
        before, after = _estimates(spec, fix, checkpointing, images)
    except Exception as e:  # noqa: BLE001 - no estimate for this model: the fix still applies
        log.warning("no memory estimate for the fix of %s: %s", spec.model, e)
        return fix
    return MemoryFix(fix.change, fix.train, before, after)


def _rule_fix(spec: RunSpec, checkpointing: bool | None) -> MemoryFix | None:
    """The estimator's fixes in its order (``studio.estimate.verdict.CANDIDATES``), automatic ones
    only: checkpointing first; then the batch, halved -- one step, not the estimator's smallest batch
    that fits, since the estimate that ran out of memory was wrong once already."""
    if checkpointing is False or (checkpointing is None and spec.train.gradient_checkpointing is False):
        return _checkpointing_fix()
    if spec.train.batch_size > 1:
        batch = spec.train.batch_size // 2
        return _batch_fix(batch, -(-spec.train.batch_size * spec.train.grad_accum // batch))
    return None


def _estimates(spec: RunSpec, fix: MemoryFix, checkpointing: bool | None, images: int) -> tuple[int, int]:
    from studio import estimate as est
    from studio.planning import estimate_request, model_config

    config = model_config(spec.model, spec.trust_remote_code)
    before = est.estimate(estimate_request(spec, config, images, gradient_checkpointing=checkpointing))
    fixed = fix.apply(spec)
    after_checkpointing = True if "gradient_checkpointing" in fix.train else checkpointing
    after = est.estimate(estimate_request(fixed, config, images, gradient_checkpointing=after_checkpointing))
    return int(before.total_bytes), int(after.total_bytes)


def resolved_checkpointing(db: Any, run_id: int) -> bool | None:
    """What the attempt used: the resolved spec the recipe writes once ``auto`` is decided."""
    from studio.training.recipe import SPEC_FILE

    path = db.workspace.run_dir(run_id) / SPEC_FILE
    try:
        value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("train", {}).get("gradient_checkpointing")
    except (OSError, yaml.YAMLError):
        return None
    return value if isinstance(value, bool) else None


def _retried_already(history: list[dict[str, Any]]) -> bool:
    """A memory fix was applied since the user last started or resumed the run: once is enough."""
    for attempt in reversed(history):
        if attempt.get("outcome") == OUTCOME and attempt.get("fix") and attempt.get("requeued"):
            return True
        if attempt.get("trigger") in (attempts.START, attempts.RESUME):
            return False
    return False


def what_happened(info: dict[str, Any]) -> str:
    return f"{OUTCOME} at step {info['step']}" if info.get("step") else OUTCOME


def after_training_job(db: Any, job: Any, run_id: int) -> bool:
    """The training job ended: if it ran out of memory, record that on the run and requeue it with
    the next fix (allowed, not yet retried) or fail it with the fix to try. True if it handled the end."""
    info = oom.out_of_memory_info(job)
    if job.status != JobStatus.FAILED or info is None:
        return False
    with db.session() as s:
        run = s.get(Run, run_id)
        spec, history = RunSpec.model_validate(run.spec), list(run.attempts or [])
    # raised outside the training loop (loading the model, tokenising): batch and checkpointing do not matter there
    before_training = info.get("step") is None and not info.get("killed")
    fix = None if before_training else next_fix(spec, resolved_checkpointing(db, run_id))
    if fix is not None and spec.train.auto_memory_fix and not _retried_already(history):
        _retry(db, job, run_id, spec, fix, info)
    else:
        _fail(db, job, run_id, spec, fix, info)
    return True


def _retry(db: Any, job: Any, run_id: int, spec: RunSpec, fix: MemoryFix, info: dict[str, Any]) -> None:
    why = f"{what_happened(info)} -> {RETRIED} {fix.change}"
    attempts.close_attempt(db, run_id, job, OUTCOME, why, requeued=True, fix=fix.text())
    with db.session() as s:
        run = s.get(Run, run_id)
        run.spec = fix.apply(spec).to_dict()
        run.status, run.finished_at, run.error = JobStatus.QUEUED, None, None
        run.measured_peak_bytes = None  # the old settings' peak says nothing about the new ones
    queue.requeue(db, job.id)
    log.warning("run %s: %s", run_id, why)


def _fail(db: Any, job: Any, run_id: int, spec: RunSpec, fix: MemoryFix | None, info: dict[str, Any]) -> None:
    attempts.close_attempt(db, run_id, job, OUTCOME, info.get("how"), fix=fix.text() if fix else None)
    if fix is None and info.get("step") is None and not info.get("killed"):
        advice = "it ran out before training began (loading the model or the data): try QLoRA or a larger device"
    elif fix is None:
        advice = "no automatic fix is left (batch 1, checkpointing on): try QLoRA, a shorter cut-off or a larger device"
    elif spec.train.auto_memory_fix:
        advice = f"it was retried once with a fix already; suggested next: {fix.text()}"
    else:
        advice = (f"suggested fix: {fix.text()}; allow automatic memory fixes in the run spec "
                  f"(train.auto_memory_fix) to retry with it by itself")
    with db.session() as s:
        run = s.get(Run, run_id)
        run.status, run.finished_at = JobStatus.FAILED, job.finished_at
        run.error = f"{what_happened(info)} ({info.get('how')}). {advice[0].upper()}{advice[1:]}."
