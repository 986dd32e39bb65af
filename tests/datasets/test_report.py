"""The import report accounts for every row: imported, skipped (and why), merged as a duplicate (of
which row), or left out over the row limit; the CLI and the Datasets tab say so."""
from __future__ import annotations

import json

from studio.cli import datasets as cli
from studio.datasets import ImportOptions, import_dataset, list_datasets, load_report
from tests.datasets.helpers import jpeg_bytes, nothing_written, upload, write, write_json
from tests.datasets.test_cli import run


def rows(n, dupes=()):
    out = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)]
    return out + [dict(out[i]) for i in dupes]


def test_duplicates_are_listed_with_the_row_they_repeat(db):
    path = write_json(db.workspace.uploads_dir / "d.json", rows(3, dupes=(0, 2, 0)))
    r = import_dataset(db, path, ImportOptions(dedupe=True)).report
    assert r.accounting() == "6 rows read -> 3 imported: 3 duplicates removed"
    assert r.dropped == [{"row": 4, "reason": "duplicate", "of_row": 1}, {"row": 5, "reason": "duplicate", "of_row": 3},
                         {"row": 6, "reason": "duplicate", "of_row": 1}]
    assert load_report(db, 1)["dropped_total"] == 3


def test_skipped_and_over_limit_rows_are_accounted_for(db):
    data = rows(8)
    data[1]["output"] = ""
    path = write_json(db.workspace.uploads_dir / "s.json", data)
    r = import_dataset(db, path, ImportOptions(on_error="skip", limit=4)).report
    assert (r.rows_read, r.rows_over_limit, r.rows_total, r.rows_imported) == (5, 3, 8, 4)
    assert r.accounting() == "8 rows read -> 4 imported: 1 bad row skipped (1 empty_turn), 3 rows over the row limit left out"
    assert r.dropped == [{"row": 2, "reason": "skipped", "code": "empty_turn", "message": "turn 2 (assistant) is empty"},
                         {"reason": "over_limit", "rows": "6-8", "count": 3}]


def test_real_alpaca_demo_reports_its_14_duplicates(db, shared_data):
    src = upload(db, shared_data / "alpaca_en_demo.json")
    r = import_dataset(db, src, ImportOptions(dedupe=True)).report
    assert r.accounting() == "999 rows read -> 985 imported: 14 duplicates removed"
    assert len([d for d in r.dropped if d["reason"] == "duplicate"]) == 14


def test_cli_prints_where_rows_went_and_where_images_were_found(settings, db, capsys):
    repo = db.workspace.uploads_dir / "repo"
    write(repo / "images" / "a.jpg", jpeg_bytes(seed=1))
    row = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>?"}, {"from": "gpt", "value": "!"}]}
    write_json(repo / "train.json", [row, row])
    assert run("dataset", "import", str(repo / "train.json"), "--dedupe") == 0
    out = capsys.readouterr().out
    assert "2 rows read -> 1 imported: 1 duplicate removed" in out
    assert "images found in uploads/repo/images (1)" in out
    assert "removed 1 duplicate rows: row 2 = row 1" in out


def test_cli_text_limit_flag(settings, db, capsys):
    path = write_json(db.workspace.uploads_dir / "long.json", [{"instruction": "x", "output": "y" * 300_000}])
    assert run("dataset", "import", str(path)) == cli.EXIT_REFUSED
    assert "long.json row 1, field `output`: text is 300,000 bytes (limit 262,144 per field)" in capsys.readouterr().err
    assert nothing_written(db)
    assert run("dataset", "import", str(path), "--max-text-kib", "512") == 0


def test_datasets_tab_message_states_duplicates_and_a_refused_upload_leaves_nothing(db, tmp_path):
    from ui.tabs.datasets import run_import

    received = write_json(tmp_path / "gradio" / "dupes.json", rows(3, dupes=(1,)))
    message, _ = run_import(db, str(received), "", "auto-detect", 0, True, 0, False, "Describe this image.", "", "")
    assert message.startswith("**Imported #1 dupes**") and "4 rows read -> 3 imported: 1 duplicate removed" in message
    bad = write_json(tmp_path / "gradio" / "bad.json", [{"instruction": "x", "output": ""}])
    message, _ = run_import(db, str(bad), "", "auto-detect", 0, True, 0, False, "Describe this image.", "", "")
    assert "Not imported" in message and [d.id for d in list_datasets(db)] == [1]
    assert [p.name for p in db.workspace.uploads_dir.rglob("*.json")] == ["dupes.json"]


def test_datasets_tab_image_root_field(db, tmp_path):
    from ui.tabs.datasets import run_import

    write(db.workspace.uploads_dir / "Photos" / "cat.jpg", jpeg_bytes(seed=2))
    row = {"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "A cat."}],
           "images": ["cat.jpg"]}
    received = write(tmp_path / "gradio" / "cats.jsonl", json.dumps(row) + "\n")
    args = ("", "auto-detect", 0, True, 0, False, "Describe this image.", "")
    message, _ = run_import(db, str(received), *args, "")
    assert "Not imported" in message
    message, _ = run_import(db, str(received), *args, "uploads/Photos")
    assert "**Imported" in message and "1 images" in message and "Images found in uploads/Photos (1)" in message


def test_datasets_tab_lists_skipped_rows(db, tmp_path):
    from ui.tabs.datasets import run_import

    received = write_json(tmp_path / "gradio" / "some_bad.json", rows(2) + [{"instruction": "x", "output": ""}])
    message, table = run_import(db, str(received), "", "auto-detect", 0, True, 0, True, "Describe this image.", "", "")
    assert "1 bad rows skipped" in message and "3 rows read -> 2 imported: 1 bad row skipped (1 empty_turn)" in message
    assert table["visible"] and table["value"].values.tolist() == [
        ["some_bad.json row 3, field `output`", "turn 2 (assistant) is empty", "write the text of this turn or remove the turn"]]


def test_datasets_tab_upload_that_never_arrived(db, tmp_path):
    from ui.tabs.datasets import run_import

    message, _ = run_import(db, str(tmp_path / "gone.json"), "", "auto-detect", 0, True, 0, False, "x", "", "")
    assert message.startswith("**Not imported:**") and "did not arrive" in message
    assert not any(db.workspace.uploads_dir.iterdir())
