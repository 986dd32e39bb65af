"""The estimator against reality: real SmolLM2 LoRA training on CPU, each run in its own worker
child process, measured peak RSS vs the estimate of the parts that live in RAM (plus the process's
footprint before loading the model). Rows are longer than the cut-off, so every batch is full."""
from __future__ import annotations

import json

import pytest

from jobs.worker import Worker, WorkerConfig
from storage.models import JobStatus
from studio.planning import estimate_report
from studio.training import service as training

CONFIGS = [(1, 128), (2, 256), (4, 512)]  # (batch size, cut-off length)
TOLERANCE = 0.20


@pytest.fixture
def long_rows(db, shared_data):
    """Canonical rows whose answers run past 512 tokens (real Alpaca answers, joined)."""
    alpaca = json.loads((shared_data / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    answers = [r["output"] for r in alpaca if len(r["output"]) > 400]
    path = db.workspace.root / "long.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(8):
            text = "\n\n".join(answers[i * 6:(i + 1) * 6])
            f.write(json.dumps({"messages": [
                {"role": "user", "content": [{"type": "text", "text": alpaca[i]["instruction"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": text}]}]}) + "\n")
    return path


@pytest.mark.slow
def test_cpu_estimate_is_within_20_percent_of_the_measured_peak(db, long_rows, smollm2_path, monkeypatch):
    monkeypatch.setenv("FTS_TORCH_THREADS", "1")
    run_ids = []
    for batch, cutoff in CONFIGS:
        spec = {"model": "builtin:smollm2-135m-instruct", "data": {"path": str(long_rows)},
                "method": {"name": "lora", "r": 8}, "name": f"mem b{batch} len{cutoff}",
                "train": {"max_steps": 2, "batch_size": batch, "grad_accum": 1, "cutoff_len": cutoff,
                          "gradient_checkpointing": False, "logging_steps": 1, "save_steps": 100}}
        run_ids.append(training.start_run(db, spec))
    worker = Worker(db, WorkerConfig(poll_s=0.05))
    while worker.run_once():
        pass
    assert [training.get_run(db, r).status for r in run_ids] == [JobStatus.SUCCEEDED] * len(CONFIGS)
    checks = estimate_report(db)
    table = "\n".join(f"{c.name}: estimated {c.estimated_bytes / 2**20:.0f} MiB, measured "
                      f"{c.measured_bytes / 2**20:.0f} MiB ({100 * c.error:+.1f}%)" for c in checks)
    print(table)
    assert len(checks) == len(CONFIGS)
    assert all(abs(c.error) <= TOLERANCE for c in checks), table
