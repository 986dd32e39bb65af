"""The job runner on standby (jobs.standby) with a real worker, real processes and real imports."""
from __future__ import annotations

import os
import signal

import psutil

from jobs import queue
from storage.models import JobStatus
from tests.processes import start_worker, wait_for

WARM_TIMEOUT = 240  # importing torch, transformers, peft, TRL on a loaded 2-core machine


def standby_pid(worker) -> int | None:
    """The worker's child that waits as a standby runner and has finished its imports."""
    for child in psutil.Process(worker.pid).children():
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--standby" in cmd and os.path.exists(cmd[-1]):  # its ready file: imports done
            return child.pid
    return None


def finished(db, job_id: int) -> bool:
    return queue.get(db, job_id).status in JobStatus.FINISHED


def test_a_job_runs_in_the_warm_standby_and_a_new_one_waits_after_it(db, settings):
    worker = start_worker(settings)
    try:
        first_standby = wait_for(lambda: standby_pid(worker), timeout=WARM_TIMEOUT, interval=0.5)
        job_id = queue.enqueue(db, "system.sleep", {"seconds": 0.2})
        wait_for(lambda: finished(db, job_id), timeout=60)
        job = queue.get(db, job_id)
        assert job.status == JobStatus.SUCCEEDED, job.error
        log_text = db.workspace.job_log(job_id).read_text()
        # handed over, not a fresh interpreter; and its stdout is the job's log
        assert f"job {job_id}: sleeping 0.2 s in process {first_standby}" in log_text
        second_standby = wait_for(lambda: standby_pid(worker), timeout=WARM_TIMEOUT, interval=0.5)
        assert second_standby != first_standby
        # a cancelled job in a standby runner stops like any other
        long_job = queue.enqueue(db, "system.sleep", {"seconds": 120})
        wait_for(lambda: queue.get(db, long_job).pid == second_standby, timeout=30)
        queue.request_cancel(db, long_job)
        wait_for(lambda: finished(db, long_job), timeout=15)
        assert queue.get(db, long_job).status == JobStatus.CANCELLED
    finally:
        worker.terminate()
        worker.wait(30)
    # the worker's orderly stop takes its standby with it
    third = [c for c in psutil.process_iter(["cmdline"]) if "--standby" in (c.info["cmdline"] or [])
             and str(settings.workspace) in " ".join(c.info["cmdline"] or [])]
    assert not [p for p in third if p.status() != psutil.STATUS_ZOMBIE]


def test_a_killed_worker_takes_its_standby_with_it(db, settings):
    worker = start_worker(settings)
    standby = wait_for(lambda: standby_pid(worker), timeout=WARM_TIMEOUT, interval=0.5)
    os.kill(worker.pid, signal.SIGKILL)  # a power cut of the worker: no cleanup code runs
    worker.wait(10)
    wait_for(lambda: not psutil.pid_exists(standby) or psutil.Process(standby).status() == psutil.STATUS_ZOMBIE,
             timeout=10)


def test_without_standby_every_job_gets_a_fresh_interpreter(db, settings):
    worker = start_worker(settings, env={"FTS_WORKER_STANDBY": "0"})
    try:
        ids = [queue.enqueue(db, "system.sleep", {"seconds": 0.1}) for _ in range(2)]
        wait_for(lambda: all(finished(db, i) for i in ids), timeout=60)
        lines = [db.workspace.job_log(i).read_text() for i in ids]
        pids = {line.split(" in process ")[1].split()[0] for line in lines}
        assert len(pids) == 2
        assert not [c for c in psutil.Process(worker.pid).children() if "--standby" in c.cmdline()]
    finally:
        worker.terminate()
        worker.wait(30)
