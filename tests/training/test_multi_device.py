"""A run that asks for two GPUs takes both: it waits until both are free, nothing else is placed on
the one left idle meanwhile, and its child sees exactly those two (CUDA_VISIBLE_DEVICES, read back
from the child process's own environment). Placement only: two declared devices (an injected
device list); the children train on this machine's CPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from jobs import queue
from jobs.devices import DEFAULT_MARGIN, GPU, Device
from jobs.worker import Worker, WorkerConfig
from storage.models import JobStatus
from studio import demands
from studio.training.service import cancel_run, get_run, start_run
from tests.processes import wait_for
from tests.training.helpers import vl_spec
from tests.training.test_scheduling import WorkerThread

pytestmark = pytest.mark.slow


def child_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_a_two_device_run_waits_for_both_devices_then_gets_cuda_visible_devices_0_1(db, mllm_id, tiny_vl):
    one = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=100_000, save_steps=100_000))
    two = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=100_000, save_steps=100_000, num_processes=2))
    later = start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=1, save_steps=100_000))
    jobs = {r: get_run(db, r).job_id for r in (one, two, later)}
    need = max(demands.training(db, queue.get(db, j), GPU).bytes for j in jobs.values())
    assert demands.training(db, queue.get(db, jobs[two]), GPU).count == 2
    room = int(1.5 * need / (1 - DEFAULT_MARGIN))  # one run per device
    config = WorkerConfig(poll_s=0.05, cancel_grace_s=1.0, devices=[Device(GPU, 0, room), Device(GPU, 1, room)])

    with WorkerThread(Worker(db, config)):
        wait_for(lambda: queue.get(db, jobs[one]).status == JobStatus.RUNNING, timeout=60)
        two_waits = wait_for(lambda: (p := queue.get(db, jobs[two]).progress or {}).get("waiting") and p, timeout=60)
        later_waits = wait_for(lambda: (p := queue.get(db, jobs[later]).progress or {}).get("waiting") and p,
                               timeout=60)
        running_meanwhile = [j.id for j in queue.running_jobs(db)]
        one_on = queue.get(db, jobs[one]).progress["devices"]

        cancel_run(db, one)
        pid = wait_for(lambda: queue.get(db, jobs[two]).pid, timeout=120, interval=0.02)
        env = child_environment(pid)
        two_on = queue.get(db, jobs[two]).progress["devices"]
        later_while_two = queue.get(db, jobs[later])
        cancel_run(db, two)
        wait_for(lambda: get_run(db, later).status in JobStatus.FINISHED, timeout=300)

    assert one_on == ["GPU 0"] and running_meanwhile == [jobs[one]]  # GPU 1 stayed free for the run that needs both
    assert two_waits["message"].startswith("waiting for GPU 1: needs each of ")
    assert later_waits["message"] == f"waiting: job {jobs[two]} is first in line"
    assert two_on == ["GPU 0", "GPU 1"] and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert later_while_two.status == JobStatus.QUEUED  # nothing else on its devices while it runs
    assert get_run(db, later).status == JobStatus.SUCCEEDED
    one_job, two_job = queue.get(db, jobs[one]), queue.get(db, jobs[two])
    assert two_job.started_at >= one_job.finished_at  # it waited for both devices
