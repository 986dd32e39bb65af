"""Run records: cancel before start, rename, delete, and the states that refuse each action."""
from __future__ import annotations

import pytest

from jobs import queue
from jobs.worker import run_inline
from storage.models import Adapter, JobStatus, RunMetric
from studio.training.service import (RunStateError, cancel_run, delete_run, get_run, list_runs, rename_run,
                                     resume_run, run_adapters, run_metrics, start_run)
from tests.training.helpers import vl_spec


def test_queued_run_cancels_at_once_and_can_be_resumed(db, mllm_id, tiny_vl):
    run_id = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=2))
    run = get_run(db, run_id)
    assert run.status == JobStatus.QUEUED and run.job_id and run.output_dir == f"runs/{run_id}"
    assert run.estimated_peak_bytes and run.estimated_peak_bytes > 0  # the memory estimator's figure
    assert cancel_run(db, run_id) == JobStatus.CANCELLED
    assert queue.claim(db, "w") is None  # no worker will ever pick it up
    resume_run(db, run_id)
    assert get_run(db, run_id).status == JobStatus.QUEUED
    with pytest.raises(RunStateError):
        delete_run(db, run_id)  # queued: cancel it first


def test_rename_and_delete_a_finished_run(db, mllm_id, tiny_vl):
    run_id = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=2))
    assert run_inline(db, get_run(db, run_id).job_id).status == JobStatus.SUCCEEDED
    with pytest.raises(RunStateError):
        resume_run(db, run_id)  # only failed or cancelled runs resume
    rename_run(db, run_id, "captions v1")
    assert get_run(db, run_id).name == "captions v1" and run_adapters(db, run_id)[0].name == "captions v1"
    with pytest.raises(ValueError):
        rename_run(db, run_id, "  ")
    folder = db.workspace.run_dir(run_id)
    assert (folder / "adapter").exists() and run_metrics(db, run_id)
    delete_run(db, run_id)
    assert list_runs(db) == [] and not folder.exists()
    with db.session() as s:
        assert s.query(Adapter).count() == 0 and s.query(RunMetric).count() == 0
