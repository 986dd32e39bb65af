"""Exports that must not be offered: refused requests, failed and unverified builds, killed and
cancelled jobs in a real worker. None of them may leave a folder behind."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import queue
from storage.models import JobStatus
from studio.export import service
from studio.export.errors import AdapterMissingError, ExportBusyError, ExportNotFoundError, ExportNotReadyError
from studio.export.options import ExportOptionsError
from tests.export.helpers import add_adapter, run_export, subprocess_env
from tests.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]


def assert_nothing_left(db, export_id: int) -> None:
    assert not db.workspace.export_dir(export_id).exists()
    assert list(db.workspace.tmp_dir.iterdir()) == [], "a partial build was left in tmp/"


def test_bad_requests_are_refused_before_anything_is_queued(module_db, made_adapters):
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    with pytest.raises(ExportOptionsError) as e:
        service.start_export(module_db, adapter_id, kind="onnx", dtype="int4", shard_size="lots", device="tpu")
    assert len(e.value.problems) == 4  # every problem at once
    with pytest.raises(ExportNotFoundError):
        service.start_export(module_db, 4242)
    shutil.rmtree(module_db.workspace.root / _adapter_path(module_db, adapter_id))
    with pytest.raises(AdapterMissingError, match="no PEFT adapter"):
        service.start_export(module_db, adapter_id)
    assert service.list_exports(module_db, adapter_id=adapter_id) == []


def _adapter_path(db, adapter_id: int) -> str:
    from storage.models import Adapter

    with db.session() as s:
        return s.get(Adapter, adapter_id).path


def test_adapter_deleted_after_queueing_fails_cleanly(module_db, made_adapters):
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    export_id = service.start_export(module_db, adapter_id, kind="merged")
    shutil.rmtree(module_db.workspace.root / _adapter_path(module_db, adapter_id))
    from jobs.worker import run_inline

    outcome = run_inline(module_db, service.get_export(module_db, export_id).job_id)
    info = service.get_export(module_db, export_id)
    assert outcome.status == info.status == JobStatus.FAILED
    assert info.verified is False and "no PEFT adapter" in info.error
    assert_nothing_left(module_db, export_id)


def test_corrupt_adapter_weights_fail_inside_the_build_and_leave_no_partial_folder(module_db, made_adapters):
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    weights = module_db.workspace.root / _adapter_path(module_db, adapter_id) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated file, as after a full disk
    export_id = run_export(module_db, adapter_id, kind="merged")
    info = service.get_export(module_db, export_id)
    assert info.status == JobStatus.FAILED and not info.downloadable and info.error
    assert info.progress.get("staging"), "the build had started in a staging folder"
    assert_nothing_left(module_db, export_id)
    with pytest.raises(ExportNotReadyError):
        service.download_path(module_db, export_id)


def test_a_merge_that_fails_verification_is_recorded_and_not_offered(module_db, made_adapters, tmp_path):
    """A very strong adapter merged into bf16 weights: rounding W + dW to bf16 moves the logits
    beyond the bf16 tolerance. The numbers stay on the row; nothing is offered or left on disk."""
    from safetensors.torch import load_file, save_file

    strong = tmp_path / "strong"
    shutil.copytree(made_adapters["vl_lora"], strong)
    tensors = load_file(strong / "adapter_model.safetensors")
    save_file({k: v * 100 if "lora_B" in k else v for k, v in tensors.items()}, strong / "adapter_model.safetensors",
              metadata={"format": "pt"})
    adapter_id = add_adapter(module_db, strong, "vl_lora")
    export_id = run_export(module_db, adapter_id, kind="merged", dtype="bf16")
    info = service.get_export(module_db, export_id)
    v = info.verification
    assert info.status == JobStatus.FAILED and info.verified is False
    assert v["passed"] is False and v["max_abs_diff"] > v["tolerance"] and "verification failed" in info.error
    assert_nothing_left(module_db, export_id)
    with pytest.raises(ExportNotReadyError):
        service.download_path(module_db, export_id)
    assert service.delete_export(module_db, export_id) == 0


def _worker(db) -> subprocess.Popen:
    env = subprocess_env(FTS_WORKSPACE=str(db.settings.workspace), FTS_DB_URL=db.settings.db_url)
    return subprocess.Popen([sys.executable, "-m", "jobs.worker", "--poll", "0.1", "--heartbeat", "1",
                             "--cancel-grace", "60", "--kinds", "export"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _staging(db, export_id: int) -> str | None:
    return service.get_export(db, export_id).progress.get("staging")


def test_killed_and_cancelled_exports_in_a_real_worker_leave_nothing(module_db, made_adapters):
    """The export runs isolated in a child process: a SIGKILL (as the OOM killer sends) and a user's
    cancel both end with the row failed/cancelled and no folder, in exports/ or tmp/."""
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    worker = _worker(module_db)
    try:
        killed = service.start_export(module_db, adapter_id, kind="merged")
        staging = wait_for(lambda: _staging(module_db, killed), 120)
        assert Path(staging).is_dir()
        os.kill(queue.get(module_db, service.get_export(module_db, killed).job_id).pid, signal.SIGKILL)
        wait_for(lambda: service.get_export(module_db, killed).status == JobStatus.FAILED, 60)
        assert "SIGKILL" in service.get_export(module_db, killed).error
        assert not Path(staging).exists()
        assert_nothing_left(module_db, killed)

        cancelled = service.start_export(module_db, adapter_id, kind="merged")
        staging = wait_for(lambda: _staging(module_db, cancelled), 120)
        with pytest.raises(ExportBusyError):
            service.delete_export(module_db, cancelled)
        service.cancel_export(module_db, cancelled)
        wait_for(lambda: service.get_export(module_db, cancelled).status == JobStatus.CANCELLED, 120)
        assert not Path(staging).exists()
        assert_nothing_left(module_db, cancelled)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_an_export_cancelled_while_queued_is_cancelled_not_stuck(module_db, made_adapters):
    adapter_id = add_adapter(module_db, made_adapters["vl_lora"], "vl_lora")
    export_id = service.start_export(module_db, adapter_id, kind="adapter")
    assert service.cancel_export(module_db, export_id) == JobStatus.CANCELLED
    info = service.get_export(module_db, export_id)
    assert info.status == JobStatus.CANCELLED and not info.downloadable
    service.delete_export(module_db, export_id)
