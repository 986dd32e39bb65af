"""Split, dedupe, row limit and the skip-bad-rows policy."""
from __future__ import annotations

import json

from studio.datasets import ImportOptions, import_dataset, load_report, read_canonical
from studio.datasets.importer import validation_size
from tests.datasets.helpers import png_bytes, upload, write, write_json


def texts(db, dataset_id, split):
    return [r["messages"][0]["content"][0]["text"] for r in read_canonical(db, dataset_id, split)]


def test_split_is_exact_seeded_and_reproducible(db, shared_data):
    src = upload(db, shared_data / "alpaca_en_demo.json")
    a = import_dataset(db, src, ImportOptions(val_fraction=0.2, seed=7)).dataset
    b = import_dataset(db, src, ImportOptions(val_fraction=0.2, seed=7)).dataset
    c = import_dataset(db, src, ImportOptions(val_fraction=0.2, seed=8)).dataset
    assert (a.num_train, a.num_validation) == (799, 200)
    assert texts(db, a.id, "validation") == texts(db, b.id, "validation")
    assert texts(db, a.id, "validation") != texts(db, c.id, "validation")
    assert sorted(texts(db, a.id, "train") + texts(db, a.id, "validation")) == sorted(texts(db, c.id, "train") + texts(db, c.id, "validation"))
    assert a.info["split"] == {"val_fraction": 0.2, "seed": 7, "train": 799, "validation": 200}


def test_validation_size_rules():
    assert [validation_size(n, f) for n, f in [(10, 0.0), (10, 0.1), (10, 0.01), (1, 0.5), (3, 0.99)]] == [0, 1, 1, 0, 2]


def test_dedupe_removes_exact_duplicates_only(db):
    rows = [{"instruction": "a", "output": "1"}, {"instruction": "a", "output": "1"},
            {"instruction": "a", "output": "2"}, {"instruction": "a ", "output": "1"}, {"instruction": "a", "output": "1"}]
    path = write_json(db.workspace.uploads_dir / "dupes.json", rows)
    r = import_dataset(db, path, ImportOptions(dedupe=True))
    assert (r.dataset.num_rows, r.report.duplicates_removed) == (3, 2)
    assert import_dataset(db, path).dataset.num_rows == 5


def test_same_image_under_two_paths_is_a_duplicate_after_hashing(db):
    up = db.workspace.uploads_dir
    write(up / "a.png", png_bytes())
    write(up / "copy_of_a.png", png_bytes())
    row = {"messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}]}
    path = write_json(up / "d.json", [row | {"images": ["a.png"]}, row | {"images": ["copy_of_a.png"]}])
    r = import_dataset(db, path, ImportOptions(dedupe=True))
    assert (r.dataset.num_rows, r.dataset.num_images, r.report.duplicates_removed) == (1, 1, 1)


def test_limit_keeps_first_good_rows(db, shared_data):
    src = upload(db, shared_data / "alpaca_en_demo.json")
    r = import_dataset(db, src, ImportOptions(limit=50))
    raw = json.loads(src.read_text())
    assert r.dataset.num_rows == 50 and r.report.limit_reached and r.report.rows_read == 50
    assert texts(db, r.dataset.id, "train")[-1].startswith(raw[49]["instruction"])


def test_skip_mode_imports_good_rows_and_reports_skipped(db):
    up = db.workspace.uploads_dir
    write(up / "ok.png", png_bytes())
    chat = lambda u, a, imgs=None: {"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}],
                                    **({"images": imgs} if imgs else {})}
    rows = [chat("hi", "hello"), chat("<image>x", "y", ["ok.png"]), chat("<image>x", "y", ["missing.png"]),
            chat("a", ""), chat("<image>a", "b"), chat("<image>again", "fine", ["ok.png"])]
    path = write_json(up / "mixed.json", rows)
    r = import_dataset(db, path, ImportOptions(on_error="skip"))
    assert (r.dataset.num_rows, r.dataset.num_skipped, r.dataset.num_images) == (3, 3, 1)
    assert r.report.skipped_by_code == {"missing_image": 1, "empty_turn": 1, "placeholder_mismatch": 1}
    assert [p["row"] for p in load_report(db, r.dataset.id)["problems"]] == [3, 4, 5]
    assert r.dataset.info["report"]["skipped"] == 3
    assert len(list((db.workspace.dataset_dir(r.dataset.id) / "images").iterdir())) == 1


def test_skip_mode_with_only_bad_rows_is_an_empty_dataset(db):
    path = write_json(db.workspace.uploads_dir / "bad.json", [{"instruction": "a", "output": ""}] * 3)
    import pytest
    from studio.datasets import DatasetImportError

    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, path, ImportOptions(on_error="skip"))
    assert e.value.problems[-1].code == "empty_dataset" and "all 3 rows were skipped (3 empty_turn)" in e.value.problems[-1].message


def test_skip_mode_still_refuses_a_broken_file(db):
    import pytest
    from studio.datasets import DatasetImportError

    path = write(db.workspace.uploads_dir / "broken.json", "[{]")
    with pytest.raises(DatasetImportError):
        import_dataset(db, path, ImportOptions(on_error="skip"))
