"""Two training processes (torchrun, gloo on CPU) through the same job path as one."""
from __future__ import annotations

import pytest

from jobs.worker import run_inline
from storage.models import JobStatus
from studio.training.service import get_run, run_metrics, start_run
from tests.training.helpers import vl_spec

pytestmark = pytest.mark.slow


def test_two_processes_train_one_adapter(db, mllm_id, tiny_vl):
    run_id = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=4, save_steps=2, num_processes=2))
    outcome = run_inline(db, get_run(db, run_id).job_id)
    assert outcome.status == JobStatus.SUCCEEDED, outcome.error
    run = get_run(db, run_id)
    assert run.status == JobStatus.SUCCEEDED and outcome.result["steps"] == 4
    # rank 0 alone reported: one row per step, not one per process
    assert [m.step for m in run_metrics(db, run_id, "train")] == [1, 2, 3, 4]
    # each step saw 2 processes x batch 2 rows: the 6 rows are split 3 + 3, an epoch takes 2 steps
    # (one process would need 3): 4 steps are 2 epochs
    assert outcome.result["data"]["train"]["kept"] == 6
    assert run_metrics(db, run_id, "train")[-1].epoch == pytest.approx(2.0)
    assert (db.workspace.run_dir(run_id) / "adapter" / "adapter_model.safetensors").exists()
