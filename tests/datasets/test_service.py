"""Dataset records: list, get, rename, delete; the row and the folder appear and vanish together."""
from __future__ import annotations

import pytest

from storage.models import Dataset
from studio.datasets import (DatasetNotFound, ImportOptions, delete_dataset, get_dataset, import_dataset,
                             list_datasets, preview, rename_dataset)
from tests.datasets.helpers import nothing_written, write_json


@pytest.fixture
def small(db):
    return write_json(db.workspace.uploads_dir / "small.json",
                      [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(30)])


def test_list_get_rename_delete(db, small):
    a = import_dataset(db, small, ImportOptions(name="first")).dataset
    b = import_dataset(db, "uploads/small.json", ImportOptions(name="second")).dataset  # workspace-relative works
    assert [d.name for d in list_datasets(db)] == ["second", "first"]
    assert rename_dataset(db, a.id, "  renamed ").name == "renamed" and get_dataset(db, a.id).name == "renamed"
    with pytest.raises(ValueError):
        rename_dataset(db, a.id, "   ")
    folder = db.workspace.dataset_dir(a.id)
    assert folder.exists()
    delete_dataset(db, a.id)
    assert not folder.exists() and [d.id for d in list_datasets(db)] == [b.id]
    with pytest.raises(DatasetNotFound):
        get_dataset(db, a.id)
    with pytest.raises(DatasetNotFound):
        delete_dataset(db, a.id)
    assert not list(db.workspace.tmp_dir.iterdir())


def test_preview_pages(db, small):
    d = import_dataset(db, small).dataset
    page = preview(db, d.id, n=5, offset=10)
    assert [r["index"] for r in page] == list(range(10, 15))
    assert page[0]["messages"][0]["content"] == [{"type": "text", "text": "q10"}]
    assert preview(db, d.id, n=5, offset=100) == []
    assert preview(db, d.id, split="validation") == []


def test_failed_row_insert_removes_the_folder(db, small, monkeypatch):
    """The commit comes after the rename; if it fails, the renamed folder must go too."""
    def broken(_path):
        raise RuntimeError("database went away")

    monkeypatch.setattr(db.workspace, "relative", broken)
    with pytest.raises(RuntimeError):
        import_dataset(db, small)
    assert nothing_written(db)


def test_stale_folder_of_a_reused_id_is_moved_aside(db, small):
    d = import_dataset(db, small).dataset
    with db.session() as s:  # simulate a crash that deleted the row but left the folder
        s.delete(s.get(Dataset, d.id))
    again = import_dataset(db, small).dataset
    assert again.id == d.id and (db.workspace.dataset_dir(again.id) / "train.jsonl").exists()
