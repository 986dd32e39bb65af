"""A run that runs out of memory: a real allocation failure in a real training child (its private
memory capped by FTS_TEST_MEMORY_HEADROOM_MB), recorded as out of memory, then retried once with
the estimator's next fix when the spec allows it, else failed with the fix to try."""
from __future__ import annotations

import pytest

from jobs import oom
from jobs.worker import Worker, WorkerConfig
from storage.models import JobStatus
from studio.spec import RunSpec
from studio.training import history
from studio.training.memory_fixes import next_fix
from studio.training.service import get_run, start_run
from tests.training.helpers import text_spec

# Growth of a training child's private memory (VmData) from the start of training to its peak,
# SmolLM2 fp32, cut-off 128, checkpointing on, 2 steps (measured on the 2-core dev machine):
# batch 8: 1867 MiB, batch 4: 1368 MiB, batch 2: 907 MiB. Half-way between batch 4 and batch 2:
HEADROOM_MB = 1140


def oom_spec(smollm2: str, dataset_id: int, allowed: bool) -> dict:
    spec = text_spec(smollm2, dataset_id, max_steps=1, batch_size=4, grad_accum=2, gradient_checkpointing=True,
                     precision="fp32", save_steps=1000, auto_memory_fix=allowed)
    spec["data"].update(max_rows=16)
    return spec


def spec_of(**train) -> RunSpec:
    return RunSpec.model_validate({"model": "builtin:smollm2-135m-instruct", "data": {"dataset_id": 1},
                                   "train": {"cutoff_len": 128, **train}})


def test_the_next_fix_turns_checkpointing_on_first_then_halves_the_batch_keeping_the_effective_batch():
    assert next_fix(spec_of(batch_size=8, grad_accum=1, gradient_checkpointing=False), False).change == \
        "gradient checkpointing on"
    fix = next_fix(spec_of(batch_size=4, grad_accum=2, gradient_checkpointing=True), True)
    assert fix.change == "batch 2 x accumulation 4" and fix.train == {"batch_size": 2, "grad_accum": 4}
    assert fix.after_bytes < fix.before_bytes  # the estimator's peaks before and after
    assert next_fix(spec_of(batch_size=3, grad_accum=1), True).change == "batch 1 x accumulation 3"
    assert next_fix(spec_of(batch_size=1, grad_accum=8), True) is None  # nothing automatic is left


@pytest.mark.slow
def test_a_run_out_of_memory_is_retried_with_the_next_fix_and_finishes(db, alpaca_id, smollm2, monkeypatch):
    monkeypatch.setenv(oom.TEST_HEADROOM_ENV, str(HEADROOM_MB))
    run_id = start_run(db, oom_spec(smollm2, alpaca_id, allowed=True))
    worker = Worker(db, WorkerConfig())
    assert worker.run_once()  # batch 4: the allocation fails for real
    run = get_run(db, run_id)
    assert run.status == JobStatus.QUEUED, run.error
    assert worker.run_once()  # batch 2 x accumulation 4 fits
    run = get_run(db, run_id)

    assert run.status == JobStatus.SUCCEEDED, run.error
    first, second = run.attempts
    assert first["outcome"] == "out of memory" and first["requeued"]
    assert first["why"] == "out of memory at step 1 -> retried with batch 2 x accumulation 4"
    assert second["trigger"] == "requeued" and second["outcome"] == JobStatus.SUCCEEDED
    assert (run.spec["train"]["batch_size"], run.spec["train"]["grad_accum"]) == (2, 4)
    assert "out of memory at step 1 -> retried with batch 2 x accumulation 4" in history.attempt_lines(run)[0]


@pytest.mark.slow
def test_without_the_specs_permission_it_fails_as_out_of_memory_with_the_fix_shown(db, alpaca_id, smollm2,
                                                                                   monkeypatch):
    monkeypatch.setenv(oom.TEST_HEADROOM_ENV, str(HEADROOM_MB))
    run_id = start_run(db, oom_spec(smollm2, alpaca_id, allowed=False))
    assert Worker(db, WorkerConfig()).run_once()
    run = get_run(db, run_id)

    assert run.status == JobStatus.FAILED
    assert run.error.startswith("out of memory at step 1 (RuntimeError: ")
    assert "Suggested fix: batch 2 x accumulation 4" in run.error and "train.auto_memory_fix" in run.error
    assert run.spec["train"]["batch_size"] == 4  # nothing was changed by itself
    [attempt] = run.attempts
    assert attempt["outcome"] == "out of memory" and attempt["fix"].startswith("batch 2 x accumulation 4")


@pytest.mark.slow
def test_out_of_memory_before_training_begins_is_not_retried_with_a_batch_fix(db, alpaca_id, smollm2, monkeypatch):
    monkeypatch.setenv(oom.TEST_HEADROOM_ENV, "300")  # the tokenizer and the rows fit; the model's weights do not
    run_id = start_run(db, oom_spec(smollm2, alpaca_id, allowed=True))
    assert Worker(db, WorkerConfig()).run_once()
    run = get_run(db, run_id)

    assert run.status == JobStatus.FAILED and run.error.startswith("out of memory (")
    assert "before training began" in run.error and len(run.attempts) == 1
