"""A chat that does not fit beside a training run, through the real app (gradio_client) and a real
worker whose one GPU (an injected device list) holds the run with too little left for the chat
model: the Chat tab says which run holds the memory and offers to wait or to use the CPU; the CPU
answers while the run keeps training."""
from __future__ import annotations

import shutil
import threading

import pytest

from jobs import queue
from jobs.devices import DEFAULT_MARGIN, GPU, Device
from jobs.worker import Worker, WorkerConfig
from storage.models import JobStatus
from studio import demands
from studio.inference import placement
from studio.models import SMOLLM2, TINY_QWEN_VL_SMALLVOCAB
from studio.training.service import cancel_run, get_run, start_run
from tests.processes import wait_for
from tests.training.helpers import vl_spec

pytestmark = pytest.mark.slow
SETTINGS = ["", 8, 0.0, 1.0, 0, 1.0, 0, 512 * 512]  # the Chat tab's controls (ui.tabs.chat.SETTINGS_ROWS)


def text(update) -> str:
    """A Markdown's value from the API's outputs (a plain value, or an update with one)."""
    return str(update.get("value") or "") if isinstance(update, dict) else str(update or "")


@pytest.fixture
def vl_dataset(db, sample_data) -> int:
    from studio.datasets import ImportOptions, import_dataset

    shutil.copytree(sample_data / "mllm_demo_data", db.workspace.uploads_dir / "mllm_demo_data")
    src = shutil.copy2(sample_data / "mllm_demo.json", db.workspace.uploads_dir / "mllm_demo.json")
    return import_dataset(db, src, ImportOptions()).dataset.id


@pytest.fixture
def one_gpu_worker_beside_a_run(db, vl_dataset, tiny_vl_small_path, smollm2_path):
    """A worker with one declared GPU that holds a long training run, with room left for half the
    chat model; yields the run's id."""
    spec = {**vl_spec(TINY_QWEN_VL_SMALLVOCAB, vl_dataset, max_steps=100_000, save_steps=100_000), "name": "long run"}
    run_id = start_run(db, spec)
    need = demands.training(db, queue.get(db, get_run(db, run_id).job_id), GPU).bytes
    room = int((need + demands.chat_model_bytes(SMOLLM2, GPU) / 2) / (1 - DEFAULT_MARGIN))
    worker = Worker(db, WorkerConfig(poll_s=0.05, cancel_grace_s=1.0, devices=[Device(GPU, 0, room)]))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        wait_for(lambda: get_run(db, run_id).status == JobStatus.RUNNING, timeout=60)
        yield run_id
    finally:
        cancel_run(db, run_id)
        worker.stop_event.set()
        thread.join(60)
        worker.services.close()


def test_a_chat_that_does_not_fit_names_the_run_holding_the_gpu_and_moves_to_the_cpu(db, client,
                                                                                    one_gpu_worker_beside_a_run):
    run_id = one_gpu_worker_beside_a_run
    sent = client.submit(SMOLLM2, [], {"text": "What is the capital of France?", "files": []}, *SETTINGS,
                         api_name="/send_message")
    offered = wait_for(lambda: next((text(o[-1]) for o in sent.outputs() if "holds" in text(o[-1])), None), timeout=60)
    job_id = next(j.id for j in queue.queued_jobs(db) if j.kind == "chat.message")

    client.predict(api_name="/chat_wait")  # the first button: keep waiting for the GPU
    waiting = placement.memory_wait(db, job_id)
    status = client.predict(api_name="/chat_use_cpu")  # then the second: answer on the CPU now
    outputs = sent.result()
    job = queue.get(db, job_id)
    run_status_then = get_run(db, run_id).status

    assert offered.startswith("run 'long run' holds ") and " GiB of GPU 0; the chat model needs " in offered
    assert waiting["wait_chosen"] and waiting["holders"][0]["ref"] == f"run:{run_id}"
    assert status == "moved to the CPU: starting"
    assert job.status == JobStatus.SUCCEEDED and job.payload["device"] == "cpu"
    assert run_status_then == JobStatus.RUNNING  # answered beside the run, which kept its GPU
    answer = outputs[2]  # status, input box, then the panes: the base model's
    answer = answer.get("value") if isinstance(answer, dict) else answer
    assert answer and answer[-1]["role"] == "assistant" and answer[-1]["content"]
    assert text(outputs[-1]) == ""  # the offer is gone
