"""A queued chat that waits for memory (progress written as the worker writes it, from a real
Budget): who holds the memory by name, wait, or move to the CPU -- not once it started, and not
on a worker that has only the CPU."""
from __future__ import annotations

import pytest

from jobs import queue
from jobs.devices import CPU, GIB, GPU, Budget, Demand, Device
from storage.models import Run
from studio.inference import placement
from studio.inference import service as chat
from studio.inference.errors import ChatError
from studio.models import SMOLLM2


def waiting_chat(db, kind: str) -> tuple[int, int]:
    with db.session() as s:
        run = Run(name="big run", model_ref=SMOLLM2, method="lora", spec={})
        s.add(run)
        s.flush()
        run_id = run.id
    budget = Budget([Device(kind, 0, 16 * GIB)])
    budget.add([0], 14 * GIB, f"run {run_id}", f"run:{run_id}")
    demand = Demand(int(1.5 * GIB), pin=0, label="chat")
    job_id = chat.send_message(db, chat.create_chat(db, SMOLLM2, []), "Hello")
    queue.set_progress(db, job_id, message=budget.why_not(demand), waiting=True, memory=budget.blocking(demand))
    return run_id, job_id


def test_a_waiting_chat_names_the_run_that_holds_the_gpu_then_moves_to_the_cpu(db):
    _, job_id = waiting_chat(db, GPU)
    info = placement.memory_wait(db, job_id)
    assert info["text"] == "run 'big run' holds 14.0 GiB of GPU 0; the chat model needs 1.5 GiB, 0.4 GiB free"
    assert info["can_use_cpu"] and not info["wait_chosen"]
    placement.keep_waiting(db, job_id)
    assert placement.memory_wait(db, job_id)["wait_chosen"]
    placement.use_cpu(db, job_id)
    job = queue.get(db, job_id)
    assert job.payload["device"] == "cpu" and job.status == "queued" and placement.memory_wait(db, job_id) is None
    assert job.payload["message"]["content"]  # the message itself is kept


def test_a_chat_that_started_or_waits_on_a_cpu_worker_is_not_moved(db):
    _, on_cpu = waiting_chat(db, CPU)
    assert not placement.memory_wait(db, on_cpu)["can_use_cpu"]
    with pytest.raises(ChatError, match="no GPU"):
        placement.use_cpu(db, on_cpu)
    chat.stop(db, on_cpu)
    _, started = waiting_chat(db, GPU)
    assert queue.claim_job(db, started, "a-worker") is not None
    with pytest.raises(ChatError, match="running"):
        placement.use_cpu(db, started)
