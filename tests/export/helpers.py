"""Helpers for export tests: adapter rows in a workspace, and building an export synchronously."""
from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

from storage.db import Database
from storage.models import Adapter, Dataset, Run, utcnow

METHOD_OF = {"lora": "lora", "adalora": "adalora", "qlora": "qlora", "vl_lora": "lora"}


def base_ref(name: str) -> str:
    from studio.models import SMOLLM2, TINY_QWEN_VL

    return TINY_QWEN_VL if name.startswith("vl") else SMOLLM2


def add_adapter(db: Database, source: Path, name: str, *, with_run: bool = False) -> int:
    """Copy an adapter into the workspace as a run's output and create its rows; returns the adapter id."""
    with db.session() as s:
        run_id = None
        if with_run:
            dataset = Dataset(name="alpaca demo", format="alpaca", num_rows=120, num_train=108, num_validation=12)
            s.add(dataset)
            s.flush()
            started = utcnow() - dt.timedelta(minutes=12, seconds=5)
            run = Run(name=f"{name} run", model_ref=base_ref(name), dataset_id=dataset.id, method=METHOD_OF[name],
                      spec={"model": base_ref(name), "method": {"name": METHOD_OF[name], "r": 8, "alpha": 16},
                            "train": {"epochs": 2, "learning_rate": 2e-4, "batch_size": 2}},
                      status="succeeded", started_at=started, finished_at=started + dt.timedelta(minutes=12, seconds=5),
                      final_loss=1.2345, final_eval_loss=1.4567, estimated_peak_bytes=3 * 2**30,
                      measured_peak_bytes=int(2.5 * 2**30))
            s.add(run)
            s.flush()
            run_id = run.id
        adapter = Adapter(run_id=run_id, name=f"{name} adapter", method=METHOD_OF[name], base_model_ref=base_ref(name),
                          path="pending")
        s.add(adapter)
        s.flush()
        folder = db.workspace.run_dir(run_id if run_id else 1000 + adapter.id) / "adapter"
        shutil.copytree(source, folder)
        adapter.path = db.workspace.relative(folder)
        adapter.size_bytes = sum(p.stat().st_size for p in folder.iterdir())
        return adapter.id


def run_export(db: Database, adapter_id: int, **options) -> int:
    """Start an export and build it synchronously (the worker's inline mode)."""
    from jobs.worker import run_inline
    from studio.export import service

    export_id = service.start_export(db, adapter_id, **options)
    run_inline(db, service.get_export(db, export_id).job_id)
    return export_id


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for processes the tests start: offline, and one torch thread each (on shared
    cores more threads spin-wait against each other; see conftest.one_torch_thread)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}
