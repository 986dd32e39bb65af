"""The queue and worker with real SQLite, real processes and real signals."""
from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import time

import psutil
import pytest

from jobs import queue
from jobs.worker import Worker, WorkerConfig, reap, run_inline
from tests.processes import start_worker, wait_for
from storage.models import JobStatus, utcnow

def status(db, job_id: int) -> str:
    return queue.get(db, job_id).status


def test_claim_takes_highest_priority_then_oldest_and_only_once(db):
    low = queue.enqueue(db, "system.echo")
    high = queue.enqueue(db, "system.echo", priority=5)
    assert queue.claim(db, "w1").id == high
    assert queue.claim(db, "w2").id == low
    assert queue.claim(db, "w3") is None


def test_claim_filters_by_kind(db):
    queue.enqueue(db, "system.sleep")
    echo = queue.enqueue(db, "system.echo")
    assert queue.claim(db, "w", kinds=["system.echo"]).id == echo
    assert queue.claim(db, "w", kinds=["system.echo"]) is None


def test_only_the_holder_can_finish_or_renew(db):
    job_id = queue.enqueue(db, "system.echo")
    queue.claim(db, "owner")
    assert not queue.heartbeat(db, job_id, "intruder")
    assert not queue.finish(db, job_id, "intruder", JobStatus.SUCCEEDED)
    assert queue.finish(db, job_id, "owner", JobStatus.SUCCEEDED)
    assert status(db, job_id) == JobStatus.SUCCEEDED


def test_cancel_of_a_queued_job_is_immediate(db):
    job_id = queue.enqueue(db, "system.echo")
    assert queue.request_cancel(db, job_id) == JobStatus.CANCELLED
    assert queue.claim(db, "w") is None


def test_reaper_fails_expired_job_or_requeues_while_attempts_remain(db):
    once = queue.enqueue(db, "system.echo")
    twice = queue.enqueue(db, "system.echo", max_attempts=2)
    queue.claim(db, "dead-worker", lease_s=1)
    queue.claim(db, "dead-worker", lease_s=1)
    assert queue.reap_expired(db) == []  # leases still valid
    reaped = queue.reap_expired(db, now=utcnow() + dt.timedelta(seconds=5))
    assert sorted(reaped) == [once, twice]
    failed = queue.get(db, once)
    assert failed.status == JobStatus.FAILED and "dead-worker" in failed.error
    assert status(db, twice) == JobStatus.QUEUED


def test_inline_mode_runs_the_job_in_process(db):
    job_id = queue.enqueue(db, "system.echo", {"message": "hello"})
    outcome = run_inline(db, job_id)
    job = queue.get(db, job_id)
    assert outcome.status == job.status == JobStatus.SUCCEEDED
    assert job.result == {"echo": "hello"}
    assert (db.workspace.root / "echo.log").read_text().startswith(f"{job_id} {os.getpid()} hello")


def test_isolated_job_runs_in_a_child_process_and_records_failures(db):
    ok = queue.enqueue(db, "system.sleep", {"seconds": 0.2})
    bad = queue.enqueue(db, "system.sleep", {"seconds": "not a number"})
    worker = Worker(db, WorkerConfig(poll_s=0.01))
    assert worker.run_once() and worker.run_once()
    assert status(db, ok) == JobStatus.SUCCEEDED
    failed = queue.get(db, bad)
    assert failed.status == JobStatus.FAILED and failed.exit_code == 1
    assert "ValueError" in failed.error
    assert "Traceback" in db.workspace.job_log(bad).read_text()


def test_two_workers_run_each_of_50_jobs_exactly_once(db, settings):
    ids = [queue.enqueue(db, "system.echo", {"message": f"m{i}"}) for i in range(50)]
    workers = [start_worker(settings), start_worker(settings)]
    try:
        wait_for(lambda: all(status(db, i) == JobStatus.SUCCEEDED for i in ids), timeout=60, interval=0.3)
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
    runs = collections.Counter(int(line.split()[0]) for line in
                               (db.workspace.root / "echo.log").read_text().splitlines())
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}
    pids = {line.split()[1] for line in (db.workspace.root / "echo.log").read_text().splitlines()}
    assert pids <= {str(w.pid) for w in workers}


def test_cancelled_job_stops_within_seconds(db, settings):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 120})
    worker = start_worker(settings)
    try:
        wait_for(lambda: queue.get(db, job_id).pid, timeout=30)
        t0 = time.monotonic()
        queue.request_cancel(db, job_id)
        wait_for(lambda: status(db, job_id) == JobStatus.CANCELLED, timeout=10)
        assert time.monotonic() - t0 < 10
    finally:
        worker.terminate()
        worker.wait(10)


def test_job_ignoring_cancel_is_killed_with_its_process_group(db, settings):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 120, "ignore_cancel": True, "spawn_grandchild": True})
    worker = start_worker(settings, "--cancel-grace", "2")
    try:
        pid_file = db.workspace.root / f"grandchild-{job_id}.pid"
        wait_for(pid_file.exists, timeout=30)
        grandchild = int(pid_file.read_text())
        child = queue.get(db, job_id).pid
        queue.request_cancel(db, job_id)
        wait_for(lambda: status(db, job_id) == JobStatus.CANCELLED, timeout=10)
        job = queue.get(db, job_id)
        assert "killed" in job.error and job.exit_signal == "SIGKILL"
        wait_for(lambda: not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie", 5)
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    finally:
        worker.terminate()
        worker.wait(10)


def test_sigkilled_worker_leaves_no_orphan_and_its_job_is_failed_by_the_reaper(db, settings):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 120})
    worker = start_worker(settings, "--lease", "2", "--heartbeat", "0.5")
    child = wait_for(lambda: queue.get(db, job_id).pid, timeout=30)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie", timeout=10)
    assert status(db, job_id) == JobStatus.RUNNING  # nobody has noticed yet
    time.sleep(2.5)  # let the lease run out
    assert reap(db) == [job_id]
    job = queue.get(db, job_id)
    assert job.status == JobStatus.FAILED and "stopped renewing its lease" in job.error
    assert db.integrity_ok()


def test_worker_sigterm_stops_its_running_job_and_records_why(db, settings):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 120})
    worker = start_worker(settings)
    child = wait_for(lambda: queue.get(db, job_id).pid, timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    job = queue.get(db, job_id)
    assert job.status == JobStatus.FAILED and "worker was stopped" in job.error
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_default_priorities_serve_chat_then_export_then_training_first_come_first_served(db):
    train_1 = queue.enqueue(db, "train", {"run_id": 1})
    export = queue.enqueue(db, "export", {"export_id": 1})
    train_2 = queue.enqueue(db, "train", {"run_id": 2})
    chat = queue.enqueue(db, "chat.message", {"chat_id": 1})
    assert [j.id for j in queue.queued_jobs(db)] == [chat, export, train_1, train_2]
    assert queue.change_priority(db, train_2, +1) == 1  # moved up: ahead of the other run, not of export
    assert [j.id for j in queue.queued_jobs(db)] == [chat, export, train_2, train_1]
    assert queue.jobs_ahead(db, queue.get(db, train_1)) == 3
    queue.claim_job(db, chat, "w")
    with pytest.raises(ValueError, match="only a queued job can move"):
        queue.change_priority(db, chat, -1)
