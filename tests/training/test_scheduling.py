"""One worker, several jobs at once: a chat beside a training run on the CPU budget; runs placed on
two (declared) devices by their estimates; the chat model freed only when a job needs its memory."""
from __future__ import annotations

import threading

import pytest

from jobs import queue
from jobs.devices import CPU, DEFAULT_MARGIN, GPU, Device
from jobs.services import WorkerServices
from jobs.worker import Worker, WorkerConfig, run_inline
from storage.models import JobStatus
from studio import demands
from studio.inference import service as chat
from studio.models import SMOLLM2
from studio.training.service import cancel_run, get_run, run_metrics, start_run
from tests.processes import wait_for
from tests.training.helpers import text_spec, vl_spec

pytestmark = pytest.mark.slow


class WorkerThread:
    """A real Worker's scheduling loop in a thread of the test process (its training runs are
    child processes, as always)."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.thread = threading.Thread(target=worker.run_forever, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc) -> None:
        self.worker.stop_event.set()
        self.thread.join(timeout=60)
        self.worker.services.close()


def train_losses(db, run_id: int) -> list[float]:
    return [m.loss for m in run_metrics(db, run_id, "train") if m.loss is not None]


def test_a_chat_completes_while_a_run_trains_and_the_loss_curve_is_unchanged(db, alpaca_id, smollm2):
    spec = text_spec(smollm2, alpaca_id, max_steps=20, save_steps=1000, precision="fp32")
    alone = start_run(db, spec)
    assert run_inline(db, get_run(db, alone).job_id).status == JobStatus.SUCCEEDED
    run_id = start_run(db, spec)
    chat_id = chat.create_chat(db, SMOLLM2, [], {"temperature": 0.0, "max_new_tokens": 8})

    with WorkerThread(Worker(db, WorkerConfig(poll_s=0.05))) as worker:  # the machine's CPU and RAM
        assert worker.devices[0].kind == CPU
        wait_for(lambda: len(train_losses(db, run_id)) >= 2, timeout=180)
        job_id = chat.send_message(db, chat_id, "What is the capital of France?")
        state = wait_for(lambda: (s := chat.poll(db, job_id))["done"] and s, timeout=180)
        training_then = get_run(db, run_id).status
        wait_for(lambda: get_run(db, run_id).status in JobStatus.FINISHED, timeout=300)

    assert state["status"] == JobStatus.SUCCEEDED and state["panes"]["base"]["text"]
    assert training_then == JobStatus.RUNNING  # the answer came while the run was training
    assert get_run(db, run_id).status == JobStatus.SUCCEEDED
    assert train_losses(db, run_id) == pytest.approx(train_losses(db, alone), rel=1e-5)


def test_three_runs_on_two_devices_run_two_at_a_time_and_the_third_says_why(db, mllm_id, tiny_vl):
    run_ids = [start_run(db, vl_spec(tiny_vl, mllm_id, max_steps=6, save_steps=1000)) for _ in range(3)]
    jobs = [get_run(db, r).job_id for r in run_ids]
    need = demands.training(db, queue.get(db, jobs[0]), GPU).bytes
    room = int(1.5 * need / (1 - DEFAULT_MARGIN))  # one run fits on each device, two do not
    devices = [Device(GPU, 0, room), Device(GPU, 1, room)]
    waiting_reasons: list[str] = []

    def third_waits():
        progress = queue.get(db, jobs[2]).progress or {}
        if progress.get("waiting"):
            waiting_reasons.append(progress["message"])
        return waiting_reasons

    with WorkerThread(Worker(db, WorkerConfig(poll_s=0.05, devices=devices))):
        wait_for(third_waits, timeout=120, interval=0.05)
        first_two = [queue.get(db, j) for j in jobs[:2]]
        wait_for(lambda: all(get_run(db, r).status in JobStatus.FINISHED for r in run_ids), timeout=600)

    assert all(j.status == JobStatus.RUNNING for j in first_two)
    assert sorted(j.progress["devices"][0] for j in first_two) == ["GPU 0", "GPU 1"]
    assert waiting_reasons[0].startswith("waiting for GPU ") and f"needs {need / 2 ** 30:.1f} GiB" in waiting_reasons[0]
    finished = [queue.get(db, j) for j in jobs]
    assert all(j.status == JobStatus.SUCCEEDED for j in finished)
    assert finished[2].started_at >= min(j.finished_at for j in finished[:2])  # it waited for a device
    assert not finished[2].progress.get("waiting")


def test_the_idle_chat_model_is_released_only_when_a_run_needs_its_memory(db, alpaca_id, smollm2):
    services = WorkerServices()
    chat_id = chat.create_chat(db, SMOLLM2, [], {"max_new_tokens": 2})
    run_inline(db, chat.send_message(db, chat_id, "Hi"), services)
    assert services.chat_model_loaded == SMOLLM2
    chat_bytes = demands.chat_model_bytes(SMOLLM2, CPU)

    def start_one(room_for_chat: float) -> Worker:
        run_id = start_run(db, text_spec(smollm2, alpaca_id, max_steps=1000))
        need = demands.training(db, queue.get(db, get_run(db, run_id).job_id), CPU).bytes
        room = int((need + room_for_chat * chat_bytes) / (1 - DEFAULT_MARGIN)) + 1
        worker = Worker(db, WorkerConfig(devices=[Device(CPU, 0, room)]), services=services)
        assert worker.schedule() == [get_run(db, run_id).job_id]
        cancel_run(db, run_id)
        wait_for(lambda: get_run(db, run_id).status in JobStatus.FINISHED, timeout=120)
        return worker

    start_one(room_for_chat=1.0)  # both fit: the chat model stays for the next message
    assert services.chat_model_loaded == SMOLLM2
    start_one(room_for_chat=0.5)  # they do not: the idle chat model makes room
    assert services.chat_model_loaded is None
    services.close()
