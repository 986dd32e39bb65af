"""Adapter-only exports: byte-identical files, a zip that peft loads, the CLI, and delete."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from storage.models import Export, JobStatus
from studio.export import service
from studio.export.errors import ExportNotFoundError
from studio.export.verify import sha256_file
from tests.export.helpers import add_adapter, run_export, subprocess_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lora_adapter(module_db, made_adapters) -> int:
    return add_adapter(module_db, made_adapters["lora"], "lora", with_run=True)


def test_adapter_zip_extracted_loads_with_peft_and_matches_the_trained_adapter(module_db, lora_adapter,
                                                                                smollm2_path, tmp_path):
    import torch
    from peft import PeftModel

    from studio.models import load_model, load_tokenizer_or_processor

    export_id = run_export(module_db, lora_adapter, kind="adapter")
    info = service.get_export(module_db, export_id)
    assert info.status == JobStatus.SUCCEEDED and info.verified, info.error
    assert info.verification["peft_type"] == "LORA" and info.verification["mismatched"] == []

    archive = service.download_path(module_db, export_id)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path)
        top = {n.split("/", 1)[0] for n in zf.namelist()}
    assert len(top) == 1
    extracted = tmp_path / top.pop()
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in extracted.iterdir()}
    assert "PeftModel.from_pretrained" in (extracted / "README.md").read_text()

    tokenizer = load_tokenizer_or_processor(smollm2_path, "text")
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    trained = module_db.workspace.root / _adapter_path(module_db, lora_adapter)

    def greedy(adapter_folder: Path) -> list[int]:
        model = PeftModel.from_pretrained(load_model(smollm2_path, "text", dtype="float32"), str(adapter_folder))
        with torch.inference_mode():
            return model.eval().generate(**inputs, max_new_tokens=8, do_sample=False)[0].tolist()

    assert greedy(extracted) == greedy(trained)


def _adapter_path(db, adapter_id: int) -> str:
    from storage.models import Adapter

    with db.session() as s:
        return s.get(Adapter, adapter_id).path


def test_cli_exports_an_adapter_inline(module_db, lora_adapter):
    env = subprocess_env()
    proc = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(module_db.workspace.root), "export",
                           f"adapter:{lora_adapter}", "--adapter", "--inline", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["verified"] is True
    assert Path(result["archive"]).is_file() and sha256_file(Path(result["archive"])) == result["sha256"]
    assert service.get_export(module_db, result["export_id"]).downloadable


def test_cli_refuses_bad_requests(module_db):
    env = subprocess_env()
    for args, message in ((["run:999", "--merged"], "run 999 does not exist"),
                          (["adapter:1", "--merged", "--dtype", "int4"], "dtype"),
                          (["nonsense", "--adapter"], "not RUN_ID")):
        proc = subprocess.run([sys.executable, "-m", "studio", "--workspace", str(module_db.workspace.root), "export",
                               *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


def test_resolve_adapter_accepts_run_and_adapter_forms(module_db, lora_adapter):
    from storage.models import Adapter

    with module_db.session() as s:
        run_id = s.get(Adapter, lora_adapter).run_id
    assert service.resolve_adapter(module_db, f"adapter:{lora_adapter}") == lora_adapter
    assert service.resolve_adapter(module_db, f"run:{run_id}") == lora_adapter
    assert service.resolve_adapter(module_db, str(run_id)) == lora_adapter
    with pytest.raises(ExportNotFoundError):
        service.resolve_adapter(module_db, "adapter:4242")


def test_delete_frees_the_disk_and_forgets_the_export(module_db, lora_adapter):
    export_id = run_export(module_db, lora_adapter, kind="adapter")
    folder = module_db.workspace.export_dir(export_id)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size > 0
    assert service.delete_export(module_db, export_id) == size
    assert not folder.exists()
    with module_db.session() as s:
        assert s.get(Export, export_id) is None
    with pytest.raises(ExportNotFoundError):
        service.download_path(module_db, export_id)
    assert export_id not in [e.id for e in service.list_exports(module_db)]
