"""Every input format, written here in its real-world shape, converts to the canonical form."""
from __future__ import annotations

import base64
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio.datasets import DatasetImportError, ImportOptions, import_dataset, preview, read_canonical
from studio.datasets.formats import FORMATS, detect_format
from tests.datasets.helpers import jpeg_bytes, png_bytes, write, write_json, write_jsonl, zip_with

SAMPLE_KEYS = {
    "messages": {"messages", "images"},
    "llava": {"id", "image", "conversations"},
    "sharegpt": {"conversations", "tools"},
    "alpaca": {"instruction", "input", "output"},
    "caption": {"image_path", "caption"},
    "sharegpt_preference": {"conversations", "chosen", "rejected", "images"},
    "alpaca_ranking": {"instruction", "input", "chosen", "rejected"},
    "preference": {"prompt", "chosen", "rejected", "messages"},  # UltraFeedback-binarized carries messages too
    "hh_rlhf": {"chosen", "rejected"},
    "kto": {"prompt", "completion", "label"},
}


@pytest.mark.parametrize("name", [n for n in FORMATS if n != "image_folder"])
def test_every_format_is_detected_from_its_fields(name):
    assert detect_format(SAMPLE_KEYS[name]) == name
    assert FORMATS[name].FIELDS and FORMATS[name].DESCRIPTION


def parts(row, i):
    return [(p["type"], p.get("text") or p.get("image")) for p in row["messages"][i]["content"]]


def test_llava_json_with_image_and_text_only_rows(db):
    up = db.workspace.uploads_dir / "llava"
    write(up / "coco" / "train2017" / "000000033471.jpg", jpeg_bytes(seed=1))
    write_json(up / "llava_instruct.json", [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
        {"id": "text-only-1", "conversations": [
            {"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}]},
    ])
    d = import_dataset(db, up / "llava_instruct.json").dataset
    assert (d.format, d.num_rows, d.num_images) == ("llava", 2, 1)
    first = next(read_canonical(db, d.id, resolve_images=False))
    assert parts(first, 0)[0][0] == "image" and parts(first, 0)[1] == ("text", "What are the colors of the bus in the image?")
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]


def test_csv_caption_table_uses_chosen_instruction(db):
    up = db.workspace.uploads_dir / "captions"
    write(up / "img" / "cat.jpg", jpeg_bytes(seed=2))
    write(up / "img" / "dog.png", png_bytes())
    with (up / "captions.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image_path", "caption"])
        w.writerow(["img/cat.jpg", "A cat, sleeping on a sofa.\nIt is grey."])
        w.writerow(["img/dog.png", "A blue square\u2028(not a dog)."])
    d = import_dataset(db, up / "captions.csv", ImportOptions(instruction="Caption this photo.")).dataset
    assert (d.format, d.num_rows, d.num_images) == ("caption", 2, 2)
    row = next(read_canonical(db, d.id))
    assert parts(row, 0)[0][0] == "image" and parts(row, 0)[1] == ("text", "Caption this photo.")
    assert parts(row, 1) == [("text", "A cat, sleeping on a sofa.\nIt is grey.")]
    assert parts(preview(db, d.id)[1], 1) == [("text", "A blue square\u2028(not a dog).")]


def test_tsv_with_question_column_is_vqa(db):
    up = db.workspace.uploads_dir
    write(up / "q.png", png_bytes(color="red"))
    write(up / "vqa.tsv", "image\tquestion\tanswer\nq.png\tWhat colour is it?\tRed.\n")
    row = preview(db, import_dataset(db, up / "vqa.tsv").dataset.id)[0]
    assert parts(row, 0)[1] == ("text", "What colour is it?") and parts(row, 1) == [("text", "Red.")]


def test_parquet_with_embedded_image_bytes(db):
    """The Hugging Face datasets export: an image struct {bytes, path} per row."""
    up = db.workspace.uploads_dir
    table = pa.table({
        "image": [{"bytes": jpeg_bytes(seed=i), "path": f"{i}.jpg"} for i in range(3)],
        "text": [f"caption {i}" for i in range(3)],
    })
    pq.write_table(table, up / "train-00000-of-00001.parquet")
    d = import_dataset(db, up / "train-00000-of-00001.parquet").dataset
    assert (d.format, d.num_rows, d.num_images) == ("caption", 3, 3)
    assert parts(next(read_canonical(db, d.id)), 1) == [("text", "caption 0")]


def test_parquet_alpaca(db):
    up = db.workspace.uploads_dir
    pq.write_table(pa.table({"instruction": ["Add 2 and 3.", "Name a colour."], "input": ["", ""],
                             "output": ["5", "Blue"]}), up / "alpaca.parquet")
    d = import_dataset(db, up / "alpaca.parquet").dataset
    assert (d.format, d.num_rows) == ("alpaca", 2)


def test_zip_with_data_file_and_images(db):
    zip_with(db.workspace.uploads_dir / "bundle.zip", {
        "bundle/data.jsonl": "".join(json.dumps(r) + "\n" for r in [
            {"messages": [{"role": "user", "content": "<image>What is this?"},
                          {"role": "assistant", "content": "A picture."}], "images": ["pics/a.jpg"]},
            {"messages": [{"role": "user", "content": "<image><image>Compare."},
                          {"role": "assistant", "content": "Same."}], "images": ["pics/a.jpg", "pics/b.png"]}]),
        "bundle/pics/a.jpg": jpeg_bytes(seed=3),
        "bundle/pics/b.png": png_bytes(),
        "__MACOSX/bundle/._a.jpg": b"junk",
    })
    d = import_dataset(db, db.workspace.uploads_dir / "bundle.zip").dataset
    assert (d.format, d.num_rows, d.num_images) == ("messages", 2, 2)
    folder = db.workspace.dataset_dir(d.id)
    assert (folder / "original" / "bundle.zip").exists() and not (folder / "_extracted").exists()


def test_folder_of_images_with_txt_captions(db):
    up = db.workspace.uploads_dir / "photos"
    write(up / "a.jpg", jpeg_bytes(seed=4))
    write(up / "a.txt", "A noisy square.\n")
    write(up / "sub" / "b.png", png_bytes())
    write(up / "sub" / "b.txt", "A blue square.")
    write(up / "notes.txt", "orphan caption")
    result = import_dataset(db, up)
    d = result.dataset
    assert (d.format, d.num_rows, d.num_images) == ("image_folder", 2, 2)
    rows = preview(db, d.id)
    assert [parts(r, 1)[0][1] for r in rows] == ["A noisy square.", "A blue square."]
    assert parts(rows[0], 0)[1] == ("text", "Describe this image.")
    assert any("notes.txt" in w for w in result.report.warnings)


def test_zip_of_captioned_images(db):
    zip_with(db.workspace.uploads_dir / "pets.zip", {
        "pets/cat.jpg": jpeg_bytes(seed=5), "pets/cat.txt": "A cat.",
        "pets/dog.jpg": jpeg_bytes(seed=6), "pets/dog.txt": "A dog.",
    })
    d = import_dataset(db, db.workspace.uploads_dir / "pets.zip").dataset
    assert (d.format, d.num_rows, d.num_images) == ("image_folder", 2, 2)


def test_openai_messages_with_content_parts_and_data_uri(db):
    up = db.workspace.uploads_dir
    write(up / "pic.png", png_bytes(color="green"))
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(color="yellow")).decode()
    write_jsonl(up / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "What colour?"},
                                                   {"type": "image_url", "image_url": {"url": "pic.png"}}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "Green."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": uri}, {"type": "text", "text": "And?"}]},
                      {"role": "assistant", "content": "Yellow."}]},
    ])
    d = import_dataset(db, up / "chat.jsonl").dataset
    assert (d.format, d.num_rows, d.num_images) == ("messages", 2, 2)
    first = next(read_canonical(db, d.id, resolve_images=False))
    assert first["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert parts(first, 1)[0] == ("text", "What colour?") and parts(first, 1)[1][0] == "image"


def test_alpaca_with_system_and_history(db):
    up = db.workspace.uploads_dir
    write_json(up / "multi.json", [{"system": "You are terse.", "instruction": "And 3+3?", "input": "",
                                    "output": "6", "history": [["2+2?", "4"], ["And 2+3?", "5"]]}])
    row = preview(db, import_dataset(db, up / "multi.json").dataset.id)[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant", "user",
                                                     "assistant"]
    assert [parts(row, i)[0][1] for i in range(7)] == ["You are terse.", "2+2?", "4", "And 2+3?", "5", "And 3+3?", "6"]


def test_column_mapping_and_format_override(db):
    up = db.workspace.uploads_dir
    write(up / "qa.csv", "prompt,response\nWhat is 1+1?,2\nCapital of France?,Paris\n")
    opts = ImportOptions(column_map={"prompt": "instruction", "response": "output"})
    d = import_dataset(db, up / "qa.csv", opts).dataset
    assert (d.format, d.num_rows) == ("alpaca", 2)
    assert parts(preview(db, d.id)[1], 1) == [("text", "Paris")]
    write(up / "pic.png", png_bytes())
    write(up / "photos.csv", "photo,desc\npic.png,A square.\n")
    opts = ImportOptions(format="caption", column_map={"photo": "image", "desc": "caption"})
    assert import_dataset(db, up / "photos.csv", opts).dataset.format == "caption"


def test_jsonl_saved_as_json_is_read_as_lines(db):
    up = db.workspace.uploads_dir
    write(up / "lines.json", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    assert import_dataset(db, up / "lines.json").dataset.num_rows == 2


def test_unknown_format_names_keys_seen_and_known_formats(db):
    up = db.workspace.uploads_dir
    write_json(up / "odd.json", [{"question": "q", "reply": "r"}])
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, up / "odd.json")
    (p,) = e.value.problems
    assert p.code == "unknown_format" and "question, reply" in p.message
    assert all(name in p.hint for name in ("alpaca", "sharegpt", "messages", "llava", "caption"))


def test_zip_images_named_from_the_archive_top_folder(db):
    """Data file in a subfolder, image paths written relative to the archive's top."""
    zip_with(db.workspace.uploads_dir / "nested.zip", {
        "data/train.json": json.dumps([{"image": "images/x.jpg", "conversations": [
            {"from": "human", "value": "<image>What?"}, {"from": "gpt", "value": "Noise."}]}]),
        "images/x.jpg": jpeg_bytes(seed=9),
    })
    d = import_dataset(db, db.workspace.uploads_dir / "nested.zip").dataset
    assert (d.format, d.num_images) == ("llava", 1)
