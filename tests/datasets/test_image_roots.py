"""Images that live beside, not below, the data file: sibling images/ folders, paths relative to a
repository root, an explicit image root, archives, and the CLI's --copy."""
from __future__ import annotations

import json

import pytest

from studio.datasets import DatasetImportError, ImportOptions, import_dataset, import_upload, load_report
from studio.datasets.service import dataset_dir
from tests.datasets.helpers import jpeg_bytes, nothing_written, png_bytes, write, write_json, zip_with


def llava_row(image, question="<image>What is it?", answer="Noise."):
    return {"image": image, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def stored_images(db, dataset_id):
    return sorted(p.name for p in (dataset_dir(db, dataset_id) / "images").iterdir())


def test_sibling_images_folder_like_lmms_finetune(db):
    """example_data/single_image.json names "bm.jpg"; the file is example_data/images/bm.jpg."""
    repo = db.workspace.uploads_dir / "lmms-finetune"
    write(repo / "example_data" / "images" / "bm.jpg", jpeg_bytes(seed=1))
    write(repo / "example_data" / "images" / "s1.jpg", jpeg_bytes(seed=2))
    path = write_json(repo / "example_data" / "single_image.json", [
        {"system_prompt": "Answer about the image.", **llava_row("bm.jpg")},
        llava_row(["bm.jpg", "s1.jpg"], "<image><image>Which has more people?", "The second."),
    ])
    result = import_dataset(db, path)
    assert (result.dataset.format, result.dataset.num_rows, result.dataset.num_images) == ("llava", 2, 2)
    assert result.report.images_found_in == {"uploads/lmms-finetune/example_data/images": 2}
    assert "images found in uploads/lmms-finetune/example_data/images (2)" == result.report.images_note()
    first = json.loads((dataset_dir(db, result.dataset) / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Answer about the image."}]}


def test_paths_relative_to_the_repository_root(db):
    """xtuner-style: data in repo/data/, rows name repo-relative paths (resources/images/x.jpg)."""
    repo = db.workspace.uploads_dir / "repo"
    write(repo / "resources" / "images" / "x.jpg", jpeg_bytes(seed=3))
    write(repo / "data" / "near.png", png_bytes())
    rows = [llava_row("resources/images/x.jpg"), llava_row("near.png")]
    result = import_dataset(db, write_json(repo / "data" / "train.json", rows))
    assert result.dataset.num_images == 2
    assert result.report.images_found_in == {"uploads/repo": 1, "uploads/repo/data": 1}


def test_nearest_folder_wins_when_two_hold_the_path(db):
    repo = db.workspace.uploads_dir / "repo"
    write(repo / "a.png", png_bytes(color="red"))
    write(repo / "data" / "a.png", png_bytes(color="green"))
    d = import_dataset(db, write_json(repo / "data" / "t.json", [llava_row("a.png")])).dataset
    (name,) = stored_images(db, d.id)
    assert load_report(db, d.id)["images_found_in"] == {"uploads/repo/data": 1}
    assert (dataset_dir(db, d) / "images" / name).read_bytes() == png_bytes(color="green")


def test_image_root_option_reads_from_that_folder_only(db):
    up = db.workspace.uploads_dir
    write(up / "media" / "cats" / "c.jpg", jpeg_bytes(seed=4))
    write(up / "ann" / "cats" / "c.jpg", jpeg_bytes(seed=5))  # beside the data file: must NOT be used
    path = write_json(up / "ann" / "train.json", [llava_row("cats/c.jpg")])
    result = import_dataset(db, path, ImportOptions(image_root="uploads/media"))
    assert result.report.images_found_in == {"uploads/media": 1}
    stored = dataset_dir(db, result.dataset) / "images" / stored_images(db, result.dataset.id)[0]
    assert stored.read_bytes() == jpeg_bytes(seed=4)
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, write_json(up / "ann" / "gone.json", [llava_row("cats/none.jpg")]),
                       ImportOptions(image_root="uploads/media"))
    (p,) = e.value.problems
    assert (p.code, p.row) == ("missing_image", 1) and "image root 'uploads/media'" in p.hint


def test_image_root_outside_the_workspace_or_missing_is_refused(db, tmp_path):
    write(tmp_path / "outside" / "x.png", png_bytes())
    path = write_json(db.workspace.uploads_dir / "t.json", [llava_row("x.png")])
    for root, words in [(str(tmp_path / "outside"), "outside the workspace"), ("no/such/folder", "not a folder")]:
        with pytest.raises(DatasetImportError) as e:
            import_dataset(db, path, ImportOptions(image_root=root))
        (p,) = e.value.problems
        assert p.code == "bad_source" and words in p.message
        assert nothing_written(db)


def test_without_image_root_the_search_stops_at_the_uploaded_folder(db):
    """An uploaded folder is its own root: an image beside it in the workspace is not found."""
    up = db.workspace.uploads_dir
    write(up / "stray.png", png_bytes())
    folder = up / "bundle"
    write_json(folder / "data" / "t.json", [llava_row("stray.png")])
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, folder)
    assert [(p.code, p.row) for p in e.value.problems] == [("missing_image", 1)]
    assert nothing_written(db)


def test_zip_resolves_from_the_data_files_folder_its_parents_and_the_archive_root(db):
    zip_with(db.workspace.uploads_dir / "qwen.zip", {
        "qwen-vl-finetune/demo/single_images.json": json.dumps([
            llava_row("images/10095.png", "Is it 38?\n<image>", "Yes"),       # relative to the data file
            llava_row("assets/logo.jpg", "<image>What logo?", "Ours."),       # relative to the archive root
            llava_row("shared.png", "<image>Which?", "That."),                # in a sibling images/ folder
        ]),
        "qwen-vl-finetune/demo/images/10095.png": png_bytes(color="red"),
        "qwen-vl-finetune/demo/images/shared.png": png_bytes(color="white"),
        "assets/logo.jpg": jpeg_bytes(seed=6),
    })
    result = import_dataset(db, db.workspace.uploads_dir / "qwen.zip")
    assert (result.dataset.num_rows, result.dataset.num_images) == (3, 3)
    assert result.report.images_found_in == {"qwen.zip:qwen-vl-finetune/demo/": 1, "qwen.zip:/": 1,
                                             "qwen.zip:qwen-vl-finetune/demo/images/": 1}


def test_image_root_inside_a_zip(db):
    zip_with(db.workspace.uploads_dir / "llava.zip", {
        "llava_v1_5_mix665k.json": json.dumps([llava_row("coco/train2017/1.jpg")]),
        "playground/data/coco/train2017/1.jpg": jpeg_bytes(seed=7),
    })
    result = import_dataset(db, db.workspace.uploads_dir / "llava.zip", ImportOptions(image_root="playground/data"))
    assert result.dataset.num_images == 1
    assert result.report.images_found_in == {"llava.zip:playground/data/": 1}


def test_a_refused_browser_upload_leaves_no_copy(db, tmp_path):
    received = write_json(tmp_path / "gradio-tmp" / "bad.json", [{"instruction": "a", "output": ""}])
    with pytest.raises(DatasetImportError):
        import_upload(db, received, "bad.json")
    assert nothing_written(db) and not any(db.workspace.uploads_dir.iterdir())
    good = write_json(tmp_path / "gradio-tmp" / "good.json", [{"instruction": "a", "output": "b"}])
    assert import_upload(db, good, "good.json").dataset.num_rows == 1
    assert len(list(db.workspace.uploads_dir.rglob("good.json"))) == 1


def test_relative_image_root_is_tried_beside_the_data_file_first(db):
    repo = db.workspace.uploads_dir / "repo"
    write(repo / "data" / "media" / "x.png", png_bytes(color="red"))
    write(db.workspace.root / "media" / "x.png", png_bytes(color="green"))  # the workspace's own media/
    path = write_json(repo / "data" / "t.json", [llava_row("x.png")])
    result = import_dataset(db, path, ImportOptions(image_root="media"))
    assert result.report.images_found_in == {"uploads/repo/data/media": 1}
