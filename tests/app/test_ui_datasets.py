"""Datasets tab through gradio_client: real upload, real import, real files."""
from __future__ import annotations

import json

from gradio_client import handle_file

from studio.datasets import service as datasets
from studio.datasets.importer import validation_size




def import_args(path, **overrides):
    args = dict(upload=handle_file(str(path)), name="", fmt="auto-detect", val_fraction=0.1, dedupe=True, limit=0,
                skip_bad=False, instruction="Describe this image.", column_map="")
    args.update(overrides)
    return list(args.values())


def test_upload_alpaca_imports_and_previews(db, client, sample_data):
    message, problems, table, selected = client.predict(*import_args(sample_data / "identity.json"),
                                                        api_name="/import_dataset")
    assert message.startswith("**Imported #1 identity")
    (row,) = datasets.list_datasets(db)
    n = len(json.loads((sample_data / "identity.json").read_text(encoding="utf-8")))  # 91 in the real file
    assert row.num_train + row.num_validation == row.num_rows == n and row.num_validation == validation_size(n, 0.1)
    assert table["data"][0][:5] == [1, "identity", "alpaca", "sft", n]
    chat = client.predict(1, 0, api_name="/preview_row")
    assert [m["role"] for m in chat][-1] == "assistant" and any("{{name}}" in str(m["content"]) for m in chat)
    # the upload was copied into the workspace, the original kept in the dataset folder
    assert any(db.workspace.uploads_dir.rglob("identity.json"))


def test_broken_upload_reports_rows_and_writes_nothing(db, client, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "ok"}\n{"instruction": "x", "output": \n', encoding="utf-8")
    message, problems, _, _ = client.predict(*import_args(bad), api_name="/import_dataset")
    assert "Not imported" in message and "Nothing was written" in message
    problems = problems.get("value", problems)  # a gr.update(value=..., visible=True)
    assert any("line 2" in row[0] for row in problems["data"])
    assert datasets.list_datasets(db) == []
    assert not any(db.workspace.datasets_dir.iterdir())


def test_bad_column_mapping_is_refused_before_import(db, client, sample_data):
    message, *_ = client.predict(*import_args(sample_data / "identity.json", column_map="nonsense"),
                                 api_name="/import_dataset")
    assert "must look like source=field" in message
    assert datasets.list_datasets(db) == []


def test_statistics_come_from_a_worker_job_with_the_models_tokenizer(db, client, shared_data, smollm2_path):
    import threading

    from jobs.worker import Worker, WorkerConfig

    client.predict(*import_args(shared_data / "identity.json", val_fraction=0), api_name="/import_dataset")
    worker = Worker(db, WorkerConfig(poll_s=0.1))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        long_cut, hist = client.predict(1, "builtin:smollm2-135m-instruct", 4096, 784, api_name="/dataset_statistics")
        short_cut, _ = client.predict(1, "builtin:smollm2-135m-instruct", 16, 784, api_name="/dataset_statistics")
    finally:
        worker.stop_event.set()
        thread.join(30)
    assert long_cut.startswith("**91 rows**") and "**0 rows** exceed the cut-off of 4096" in long_cut
    assert "**91 rows** exceed the cut-off of 16" in short_cut
    assert sum(r[1] for r in hist["data"]) == 91
