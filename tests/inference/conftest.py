"""Fixtures for chat tests: a LoRA adapter really trained on the identity data, and its row."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobs.worker import run_inline
from storage.db import Database
from storage.settings import Settings
from studio.models import SMOLLM2
from tests.inference.helpers import add_adapter

IDENTITY_NAME, IDENTITY_AUTHOR = "Nova", "Finetune Studio"


def _busy_cpu() -> bool:
    return os.getloadavg()[0] > (os.cpu_count() or 1)


@pytest.fixture(autouse=True)
def _threads_on_a_busy_cpu(monkeypatch):
    """As in the training tests: one PyTorch thread when the CPU is shared with busy processes
    (spinning OpenMP threads make each token several times slower). The engine reads it once."""
    if "FTS_TORCH_THREADS" not in os.environ and _busy_cpu():
        monkeypatch.setenv("FTS_TORCH_THREADS", "1")


@pytest.fixture(scope="package")
def services():
    """One worker's services for the chat tests (like a worker's, its engine keeps the base model
    between tests); its model is freed after them."""
    from jobs.services import WorkerServices

    owned = WorkerServices()
    yield owned
    owned.close()


@pytest.fixture
def fresh_services():
    """Services of a worker that has not chatted yet (to count what one session loads)."""
    from jobs.services import WorkerServices

    owned = WorkerServices()
    yield owned
    owned.close()


@pytest.fixture(scope="session")
def identity_adapter_dir(smollm2_path, sample_data, tmp_path_factory) -> Path:
    """A LoRA adapter on SmolLM2 trained with studio.training on the English rows of identity.json
    (``{{name}}`` -> Nova, ``{{author}}`` -> Finetune Studio): 12 steps, ~40 s on 2 busy cores."""
    from studio.training import service as training

    root = tmp_path_factory.mktemp("identity-run")
    data = root / "identity.jsonl"
    data.write_text(_identity_jsonl(sample_data / "identity.json"), encoding="utf-8")
    db = Database(Settings.resolve(root / "workspace"))
    spec = {"model": SMOLLM2, "data": {"path": str(data)},
            "method": {"name": "lora", "preset": "light", "targets": {"mode": "all-linear"}},
            "train": dict(epochs=3, batch_size=4, grad_accum=1, cutoff_len=128, learning_rate=2e-3,
                          gradient_checkpointing=False, logging_steps=4, save_steps=1000, warmup_ratio=0.0,
                          lr_scheduler="constant", precision="fp32", seed=0)}
    with pytest.MonkeyPatch.context() as mp:
        if "FTS_TORCH_THREADS" not in os.environ and _busy_cpu():
            mp.setenv("FTS_TORCH_THREADS", "1")
        run_id = training.start_run(db, spec)
        outcome = run_inline(db, training.get_run(db, run_id).job_id)
    assert outcome.status == "succeeded", outcome.error
    adapter = training.run_adapters(db, run_id)[0]
    folder = db.workspace.root / adapter.path
    db.dispose()
    return folder


def _identity_jsonl(source: Path) -> str:
    """Canonical rows from the English identity questions (the rest of the file is Chinese)."""
    lines = []
    for row in json.loads(source.read_text(encoding="utf-8")):
        if not row["instruction"].isascii():
            continue
        answer = row["output"].replace("{{name}}", IDENTITY_NAME).replace("{{author}}", IDENTITY_AUTHOR)
        lines.append(json.dumps({"messages": [
            {"role": "user", "content": [{"type": "text", "text": row["instruction"]}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}))
    return "\n".join(lines) + "\n"


@pytest.fixture
def identity_id(db, identity_adapter_dir) -> int:
    return add_adapter(db, identity_adapter_dir, SMOLLM2, "identity-nova")
