"""``dataset import --copy`` from outside the workspace brings the images its rows name along, reads
nothing outside what the person pointed at, and leaves nothing behind when refused."""
from __future__ import annotations

import json

from studio.cli import datasets as cli
from studio.datasets import list_datasets, read_canonical
from studio.datasets.service import dataset_dir
from tests.datasets.helpers import jpeg_bytes, nothing_written, png_bytes, write, write_json
from tests.datasets.test_cli import run


def make_repo(root):
    """A repository as cloned: data in data/, images in a separate images/ tree at the top."""
    write(root / "images" / "train" / "a.jpg", jpeg_bytes(seed=1))
    write(root / "images" / "train" / "b.png", png_bytes())
    rows = [{"image": f"images/train/{n}", "conversations": [{"from": "human", "value": "<image>What is it?"},
                                                             {"from": "gpt", "value": f"Picture {n}."}]}
            for n in ("a.jpg", "b.png")]
    return write_json(root / "data" / "train.json", rows)


def assert_nothing_left(db):
    assert nothing_written(db) and not any(db.workspace.uploads_dir.iterdir())


def test_copy_of_a_data_file_whose_images_lie_beside_it(settings, db, tmp_path, capsys):
    data = make_repo(tmp_path / "repo")
    assert run("dataset", "import", str(data), "--copy") == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "train.json row 1, field `image`: image 'images/train/a.jpg' not found" in err and "image root" in err
    assert_nothing_left(db)

    assert run("dataset", "import", str(data), "--copy", "--image-root", str(tmp_path / "repo")) == 0
    out = capsys.readouterr().out
    assert "2 rows read -> 2 imported" in out and f"images found in {tmp_path / 'repo'} (2)" in out
    (d,) = list_datasets(db)
    assert (d.num_images, d.source) == (2, str(data))
    folder = dataset_dir(db, d)
    assert len(list((folder / "images").iterdir())) == 2 and (folder / "original" / "train.json").exists()
    assert not any(db.workspace.uploads_dir.iterdir())  # the dataset holds its own copies
    for row in read_canonical(db, d.id):
        assert str(folder) in row["messages"][0]["content"][0]["image"]


def test_copy_of_the_repository_folder_searches_up_to_it(settings, db, tmp_path, capsys):
    make_repo(tmp_path / "repo")
    assert run("dataset", "import", str(tmp_path / "repo"), "--copy") == 0
    assert "images found in" in capsys.readouterr().out
    assert list_datasets(db)[0].num_images == 2


def test_copy_never_follows_a_link_out_of_the_folder(settings, db, tmp_path, capsys):
    secret = write(tmp_path / "private" / "id.png", png_bytes(color="red"))
    repo = tmp_path / "repo"
    write_json(repo / "data.json", [{"messages": [{"role": "user", "content": "<image>?"},
                                                  {"role": "assistant", "content": "!"}], "images": ["pic.png"]}])
    (repo / "pic.png").symlink_to(secret)
    assert run("dataset", "import", str(repo / "data.json"), "--copy") == cli.EXIT_REFUSED
    assert "symbolic link to a file outside the uploaded data" in capsys.readouterr().err
    assert_nothing_left(db)


def test_refused_copy_of_a_zip_leaves_nothing(settings, db, tmp_path, capsys):
    import zipfile

    bad = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("data.json", json.dumps([{"instruction": "q", "output": ""}]))
    assert run("dataset", "import", str(bad), "--copy") == cli.EXIT_REFUSED
    assert "turn 2 (assistant) is empty" in capsys.readouterr().err
    assert_nothing_left(db)


def test_relative_paths_are_read_from_the_workspace_or_else_the_current_folder(settings, db, tmp_path, monkeypatch,
                                                                             capsys):
    repo = db.workspace.uploads_dir / "repo"
    data = make_repo(repo)
    monkeypatch.chdir(tmp_path)  # the workspace is tmp_path/workspace
    relative_to_here = str(data.relative_to(tmp_path))
    assert run("dataset", "import", relative_to_here, "--image-root", str(repo.relative_to(tmp_path))) == 0
    assert run("dataset", "import", str(data.relative_to(db.workspace.root))) == 0  # searches up to uploads/repo
    assert [d.num_images for d in list_datasets(db)] == [2, 2]
