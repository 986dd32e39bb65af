"""Cancel and resume with a real worker process: cancel stops within seconds keeping a complete
checkpoint; a run whose worker is SIGKILLed is requeued and finishes from its last complete
checkpoint, its attempts recorded; attempts without progress are capped."""
from __future__ import annotations

import datetime as dt
import signal
import time

import pytest

from jobs import queue
from jobs.worker import reap
from storage.models import JobStatus, utcnow
from studio.methods import METHODS
from studio.training import checkpoints
from studio.training.recipe import train
from studio.training.reporting import NullReporter
from studio.training.service import cancel_run, get_run, resume_run, run_adapters, run_metrics, start_run
from studio.spec import RunSpec
from studio.methods.adalora import ADALORA_STATE
from tests.processes import kill_group, start_worker, wait_for
from tests.training.helpers import text_spec, vl_spec

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


def test_a_run_outlives_its_killed_worker_and_resumes_from_its_last_checkpoint(db, settings, mllm_id, tiny_vl):
    run_id = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=60, save_steps=10, batch_size=1))
    worker = start_worker(settings, "--lease", "3", "--heartbeat", "1", own_group=True)
    try:
        wait_for(lambda: complete_step(db, run_id), timeout=180, interval=0.02)
    finally:
        kill_group(worker)  # a power cut: no goodbye; the training child dies with it (PR_SET_PDEATHSIG)
    killed_at = complete_step(db, run_id)
    assert get_run(db, run_id).status == JobStatus.RUNNING  # nobody has noticed yet
    # The supervisor starts a new worker; its reaper sees the old one is gone and requeues the run.
    successor = start_worker(settings, "--lease", "3", "--heartbeat", "1", own_group=True)
    try:
        wait_for(lambda: get_run(db, run_id).status == JobStatus.SUCCEEDED, timeout=300, interval=0.2)
    finally:
        kill_group(successor)
    run, job = get_run(db, run_id), queue.get(db, get_run(db, run_id).job_id)
    assert run.error is None and job.status == JobStatus.SUCCEEDED
    first, second = run.attempts
    assert first["outcome"] == "worker-lost" and "stopped renewing its lease" in first["why"]
    assert first["trigger"] == "start" and first["requeued"] and first["from_step"] == 0
    assert first["to_step"] >= (killed_at or 0) >= 10 and first["to_step"] % 10 == 0
    assert second["trigger"] == "requeued" and second["from_step"] == first["to_step"]
    assert second["outcome"] == JobStatus.SUCCEEDED and second["to_step"] == 60
    assert job.result["resumed_from_step"] == first["to_step"] and job.result["steps"] == 60
    steps = [m.step for m in run_metrics(db, run_id, "train") if m.loss is not None]
    assert steps == list(range(1, 61))  # no step twice, none missing
    assert (db.workspace.run_dir(run_id) / "adapter" / "adapter_model.safetensors").exists()
    assert len(run_adapters(db, run_id)) == 1


def _claim_and_lose(db, run_id: int, job_id: int) -> None:
    """A worker takes the job and dies before its lease runs out (no process needed for the queue)."""
    assert queue.claim(db, "gone-worker", ["train"], lease_s=1).id == job_id
    assert reap_now(db) == [job_id]


def reap_now(db) -> list[int]:
    return reap(db, now=utcnow() + dt.timedelta(seconds=5))  # as a reaper will once the lease is over


def test_attempts_without_a_new_checkpoint_are_capped_and_one_with_a_checkpoint_does_not_count(db, alpaca_id, smollm2,
                                                                                            monkeypatch):
    monkeypatch.delenv("FTS_MAX_IDLE_ATTEMPTS", raising=False)
    run_id = start_run(db, text_spec(smollm2, alpaca_id))
    job_id = get_run(db, run_id).job_id
    _claim_and_lose(db, run_id, job_id)
    _claim_and_lose(db, run_id, job_id)
    assert get_run(db, run_id).status == JobStatus.QUEUED
    # the third attempt saves a checkpoint before its worker dies: it made progress
    assert queue.claim(db, "gone-worker", ["train"], lease_s=1).id == job_id
    folder = db.workspace.run_dir(run_id) / "checkpoints" / "checkpoint-4"
    folder.mkdir(parents=True)
    checkpoints.mark_complete(folder, 4)
    reap_now(db)
    for _ in range(2):
        _claim_and_lose(db, run_id, job_id)
        assert get_run(db, run_id).status == JobStatus.QUEUED
    _claim_and_lose(db, run_id, job_id)  # the third in a row without progress
    run = get_run(db, run_id)
    assert run.status == JobStatus.FAILED and "3 times in a row without a new complete checkpoint" in run.error
    assert [a["to_step"] for a in run.attempts] == [0, 0, 4, 4, 4, 4]
    assert [a["trigger"] for a in run.attempts] == ["start"] + ["requeued"] * 5
    assert [a["requeued"] for a in run.attempts] == [True] * 5 + [False]
    # the user resumes: the count starts again
    resume_run(db, run_id)
    _claim_and_lose(db, run_id, job_id)
    assert get_run(db, run_id).status == JobStatus.QUEUED and get_run(db, run_id).attempts[-1]["trigger"] == "resume"


class StopAfter(NullReporter):
    """A reporter whose user presses cancel once step ``n`` has been logged."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def cancelled(self) -> bool:
        return any((m.get("step") or 0) >= self.n for m in self.metrics)


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].vision])  # on the VL test model
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
