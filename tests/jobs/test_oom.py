"""Out of memory in a job's child process, told apart from other failures: a real allocation
failure (a memory cap on the child) and a SIGKILL that neither the worker nor the user sent."""
from __future__ import annotations

import os
import signal
import threading

from jobs import oom, queue
from jobs.worker import Worker, WorkerConfig
from storage.models import JobStatus
from tests.processes import wait_for


def test_an_allocation_failure_in_the_child_is_recorded_as_out_of_memory(db, monkeypatch):
    monkeypatch.setenv(oom.TEST_HEADROOM_ENV, "64")
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 0.1, "allocate_mb": 512})
    assert Worker(db, WorkerConfig()).run_once()
    job = queue.get(db, job_id)
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("out of memory: MemoryError")
    assert oom.out_of_memory_info(job)["how"].startswith("MemoryError")


def test_the_same_job_without_a_cap_succeeds(db):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 0.1, "allocate_mb": 512})
    assert Worker(db, WorkerConfig()).run_once()
    assert queue.get(db, job_id).status == JobStatus.SUCCEEDED


def test_a_child_killed_by_a_sigkill_nobody_here_sent_is_out_of_memory(db):
    job_id = queue.enqueue(db, "system.sleep", {"seconds": 60})
    worker = Worker(db, WorkerConfig(heartbeat_s=0.5))
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    pid = wait_for(lambda: queue.get(db, job_id).pid, timeout=30)
    os.kill(pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    thread.join(timeout=30)
    job = queue.get(db, job_id)
    assert job.status == JobStatus.FAILED and job.exit_signal == "SIGKILL"
    assert job.error.startswith("out of memory: ") and "out-of-memory killer" in job.error
    assert oom.out_of_memory_info(job) is not None


def test_exceptions_that_are_and_are_not_out_of_memory():
    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, without importing torch
        pass

    assert oom.is_out_of_memory(MemoryError())
    assert oom.is_out_of_memory(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert oom.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9"))
    try:
        try:
            raise MemoryError()
        except MemoryError as e:
            raise ValueError("while collating") from e
    except ValueError as wrapped:
        assert oom.is_out_of_memory(wrapped)
    assert not oom.is_out_of_memory(ValueError("no training row fits"))
    assert not oom.is_out_of_memory(RuntimeError("expected all tensors to be on the same device"))
