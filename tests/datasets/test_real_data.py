"""The real datasets in ../shared/data import, convert and preview correctly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.models import Dataset
from studio.datasets import ImportOptions, get_dataset, import_dataset, load_report, preview, read_canonical
from studio.datasets.service import dataset_dir
from tests.datasets.helpers import upload


@pytest.mark.parametrize("name, rows, fmt", [
    ("alpaca_en_demo.json", 999, "alpaca"),
    ("alpaca_zh_demo.json", 1000, "alpaca"),
    ("identity.json", 91, "alpaca"),
    ("glaive_toolcall_en_demo.json", 300, "sharegpt"),
    ("mllm_demo.json", 6, "messages"),
])
def test_real_file_imports_with_detected_format(db, shared_data, name, rows, fmt):
    src = upload(db, shared_data / name)
    if name == "mllm_demo.json":
        upload(db, shared_data / "mllm_demo_data")
    result = import_dataset(db, src, ImportOptions())
    d = result.dataset
    assert (d.format, d.num_rows, d.num_train, d.num_validation, d.num_skipped) == (fmt, rows, rows, 0, 0)
    assert result.report.format_detected
    folder = dataset_dir(db, d)
    assert folder == db.workspace.dataset_dir(d.id) and d.path == f"datasets/{d.id}"
    assert (folder / "train.jsonl").exists() and (folder / "report.json").exists()
    assert (folder / "original" / name).read_bytes() == (shared_data / name).read_bytes()
    assert d.size_bytes > 0 and d.info["report"]["rows_imported"] == rows
    assert sum(1 for _ in read_canonical(db, d.id)) == rows
    for row in preview(db, d.id, n=5):
        roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
        assert roles[0] == "user" and roles[-1] == "assistant"


def test_alpaca_rows_convert_instruction_input_output(db, shared_data):
    src = upload(db, shared_data / "alpaca_en_demo.json")
    d = import_dataset(db, src).dataset
    raw = json.loads(src.read_text())
    with_input = next(i for i, r in enumerate(raw) if r["input"])
    row = preview(db, d.id, n=1, offset=with_input)[0]
    user, assistant = row["messages"]
    assert user["content"] == [{"type": "text", "text": raw[with_input]["instruction"] + "\n" + raw[with_input]["input"]}]
    assert assistant["content"][0]["text"] == raw[with_input]["output"]


def test_chinese_text_is_kept_verbatim(db, shared_data):
    src = upload(db, shared_data / "alpaca_zh_demo.json")
    d = import_dataset(db, src).dataset
    raw = json.loads(src.read_text())
    first = next(read_canonical(db, d.id))
    assert first["messages"][1]["content"][0]["text"] == raw[0]["output"]
    assert raw[0]["output"][:5] in (dataset_dir(db, d) / "train.jsonl").read_text(encoding="utf-8")


def test_sharegpt_tool_calls_map_to_assistant_and_observations_to_user(db, shared_data):
    src = upload(db, shared_data / "glaive_toolcall_en_demo.json")
    d = import_dataset(db, src).dataset
    raw = json.loads(src.read_text())
    i = next(i for i, r in enumerate(raw) if any(t["from"] == "function_call" for t in r["conversations"]))
    row = preview(db, d.id, n=1, offset=i)[0]
    expected = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "user"}
    assert [m["role"] for m in row["messages"]] == [expected[t["from"]] for t in raw[i]["conversations"]]
    assert row["tools"] == json.loads(raw[i]["tools"])  # kept for the chat template's `tools=`


def test_mllm_images_copied_under_content_hash_and_shared(db, shared_data):
    src = upload(db, shared_data / "mllm_demo.json")
    upload(db, shared_data / "mllm_demo_data")
    d = import_dataset(db, src).dataset
    assert d.has_images and d.num_images == 3
    folder = dataset_dir(db, d)
    stored = sorted(p.name for p in (folder / "images").iterdir())
    assert len(stored) == 3 and all(len(Path(n).stem) == 64 and n.endswith(".jpg") for n in stored)
    row = next(read_canonical(db, d.id, resolve_images=False))
    images = [p["image"] for m in row["messages"] for p in m["content"] if p["type"] == "image"]
    assert len(images) == 2 and images[0] == images[1]  # the row that uses the same image twice
    # placeholders become image parts where they stood: "<image>Who are they?" / "What are they doing?<image>"
    assert [p["type"] for p in row["messages"][0]["content"]] == ["image", "text"]
    assert [p["type"] for p in row["messages"][2]["content"]] == ["text", "image"]
    shown = preview(db, d.id, n=6)
    paths = {p["image"] for r in shown for m in r["messages"] for p in m["content"] if p["type"] == "image"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    mapping = json.loads((folder / "original" / "images.json").read_text())
    assert set(mapping) == {"mllm_demo_data/1.jpg", "mllm_demo_data/2.jpg", "mllm_demo_data/3.jpg"}
    assert load_report(db, d.id)["image_refs"] == 8


def test_db_row_is_committed_only_with_its_folder(db, shared_data):
    src = upload(db, shared_data / "identity.json")
    d = import_dataset(db, src, ImportOptions(name="Identity  ")).dataset
    again = get_dataset(db, d.id)
    assert again.name == "Identity" and again.source == "uploads/identity.json"
    with db.session() as s:
        assert s.query(Dataset).count() == 1
    assert [p.name for p in db.workspace.datasets_dir.iterdir()] == [str(d.id)]
    assert not list(db.workspace.tmp_dir.iterdir())
