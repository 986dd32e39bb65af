"""Cancel and resume with a real worker process: cancel stops within seconds keeping a complete
checkpoint; a SIGKILLed worker leaves the run failed with a reason; resume finishes the run from
its last complete checkpoint."""
from __future__ import annotations

import signal
import time

import pytest

from jobs import queue
from jobs.worker import reap, run_inline
from storage.models import JobStatus
from studio.methods import METHODS
from studio.training import checkpoints
from studio.training.recipe import train
from studio.training.reporting import NullReporter
from studio.training.service import cancel_run, get_run, resume_run, run_metrics, start_run
from studio.spec import RunSpec
from studio.methods.adalora import ADALORA_STATE
from tests.processes import start_worker, wait_for
from tests.training.helpers import vl_spec

pytestmark = pytest.mark.slow


def complete_step(db, run_id: int) -> int | None:
    latest = checkpoints.latest_complete(db.workspace.run_dir(run_id) / "checkpoints")
    return checkpoints.step_of(latest) if latest else None


def test_cancel_stops_within_seconds_and_keeps_a_complete_checkpoint(db, settings, mllm_id, tiny_vl):
    run_id = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=5000, save_steps=5))
    worker = start_worker(settings, "--cancel-grace", "60")  # a kill would be the worker's doing, not ours
    try:
        wait_for(lambda: complete_step(db, run_id), timeout=180)
        asked = time.monotonic()
        cancel_run(db, run_id)
        wait_for(lambda: get_run(db, run_id).status == JobStatus.CANCELLED, timeout=30, interval=0.05)
        latency = time.monotonic() - asked
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    print(f"cancel latency {latency:.2f}s")
    assert latency < 10
    run, job = get_run(db, run_id), queue.get(db, get_run(db, run_id).job_id)
    assert job.exit_code == 3 and "last complete checkpoint is kept" in run.error  # it stopped by itself
    step = complete_step(db, run_id)
    last_logged = max(m.step for m in run_metrics(db, run_id, "train"))
    assert step == last_logged  # the cancel saved the step it stopped at
    ckpt = db.workspace.run_dir(run_id) / "checkpoints" / f"checkpoint-{step}"
    assert (ckpt / "adapter_model.safetensors").exists() and (ckpt / "optimizer.pt").exists()
    assert not (db.workspace.run_dir(run_id) / "adapter").exists()  # no final adapter from a cancelled run


def test_killed_worker_leaves_run_failed_then_resume_finishes_it(db, settings, mllm_id, tiny_vl):
    run_id = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=60, save_steps=10, batch_size=1))
    worker = start_worker(settings, "--lease", "3", "--heartbeat", "1")
    try:
        wait_for(lambda: complete_step(db, run_id), timeout=180, interval=0.02)
        worker.send_signal(signal.SIGKILL)  # no goodbye: the child dies with it (PR_SET_PDEATHSIG)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_at = complete_step(db, run_id)
    assert get_run(db, run_id).status == JobStatus.RUNNING  # nobody has noticed yet
    # Another worker's reaper notices the lease expired and fails the job; the run follows.
    wait_for(lambda: reap(db), timeout=15, interval=0.5)
    run = get_run(db, run_id)
    assert run.status == JobStatus.FAILED and "stopped renewing its lease" in run.error
    assert (killed_at or 0) >= 10

    job_id = resume_run(db, run_id)
    assert get_run(db, run_id).status == JobStatus.QUEUED
    outcome = run_inline(db, job_id)
    assert outcome.status == JobStatus.SUCCEEDED, outcome.error
    run = get_run(db, run_id)
    assert run.status == JobStatus.SUCCEEDED and run.error is None
    assert outcome.result["resumed_from_step"] == complete_step_before_resume(killed_at, outcome)
    assert outcome.result["steps"] == 60
    steps = [m.step for m in run_metrics(db, run_id, "train") if m.loss is not None]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # no step twice, none missing at the end
    assert (db.workspace.run_dir(run_id) / "adapter" / "adapter_model.safetensors").exists()


def complete_step_before_resume(killed_at: int | None, outcome) -> int:
    """The checkpoint the resume started from: the newest complete one when the worker died
    (a later one may have been completed between our look and the kill)."""
    resumed = outcome.result["resumed_from_step"]
    assert resumed >= (killed_at or 0) and resumed % 10 == 0
    return resumed


class StopAfter(NullReporter):
    """A reporter whose user presses cancel once step ``n`` has been logged."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def cancelled(self) -> bool:
        return any((m.get("step") or 0) >= self.n for m in self.metrics)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_resumes_from_its_checkpoint(db, mllm_id, tiny_vl, tmp_path, method):
    settings = {"name": method, "tinit": 1, "tfinal": 2} if method == "adalora" else {"name": method}
    spec = RunSpec.model_validate(vl_spec(tiny_vl, mllm_id, settings, max_steps=12, save_steps=3))
    first = train(spec, tmp_path, StopAfter(4), db=db)
    assert first.status == "cancelled" and first.adapter_dir is None
    stopped = first.global_step
    assert checkpoints.step_of(checkpoints.latest_complete(tmp_path / "checkpoints")) == stopped
    if method == "adalora":  # full-rank tensors, rank pattern and importance statistics travel along
        assert (tmp_path / "checkpoints" / f"checkpoint-{stopped}" / ADALORA_STATE).exists()
    second = train(spec, tmp_path, NullReporter(), db=db)
    assert second.status == "completed" and second.resumed_from_step == stopped and second.global_step == 12
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
