"""``python -m studio train spec.yaml``: the resolved spec of a run trains again headless."""
from __future__ import annotations

import json
import shutil

import yaml

from studio.__main__ import main
from studio.datasets import read_canonical
from studio.training.service import list_runs
from tests.training.helpers import vl_spec


def write_headless_dataset(db, dataset_id: int, folder) -> None:
    """A canonical JSONL outside the studio, images beside it (paths relative to the file)."""
    folder.mkdir()
    shutil.copytree(db.workspace.dataset_dir(dataset_id) / "images", folder / "images")
    rows = read_canonical(db, dataset_id, resolve_images=False)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_train_inline_from_yaml_then_rerun_its_resolved_spec(db, settings, mllm_id, tiny_vl, tmp_path, capsys):
    write_headless_dataset(db, mllm_id, tmp_path / "data")
    spec = vl_spec(tiny_vl, mllm_id, max_steps=2, save_steps=2)
    spec["data"] = {"path": "data/train.jsonl"}  # relative to the YAML file
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))

    assert main(["train", str(tmp_path / "spec.yaml"), "--inline"]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "adapter:" in out
    first = list_runs(db)[0]

    resolved = db.workspace.run_dir(first.id) / "spec.yaml"
    assert main(["train", str(resolved), "--inline"]) == 0
    assert [r.status for r in list_runs(db)] == ["succeeded", "succeeded"]


def test_check_reports_problems_with_exit_code_2(db, settings, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: builtin:nope\ndata: {dataset_id: 42}\nmethod: {name: lora, r: 0}\n")
    assert main(["train", str(tmp_path / "bad.yaml"), "--check"]) == 2
    assert "method.r" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: builtin:nope\ndata: {dataset_id: 42}\n")
    assert main(["train", str(tmp_path / "bad.yaml"), "--check"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "builtin:nope" in err and "dataset" in err
