"""The shapes real files come in beyond one-object-per-row: a file that is one conversation, lines
that are bare lists of turns, bare image parts with a row-level images list, Alpaca with images."""
from __future__ import annotations


import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio.datasets import DatasetImportError, import_dataset, read_canonical
from tests.datasets.helpers import jpeg_bytes, nothing_written, png_bytes, write, write_json, write_jsonl


def kinds(row):
    return [[p["type"] for p in m["content"]] for m in row["messages"]]


def rows_of(db, dataset_id):
    return list(read_canonical(db, dataset_id, resolve_images=False))


def test_sharegpt_file_that_is_one_conversation_object(db):
    path = write_json(db.workspace.uploads_dir / "one.json", {
        "system": "Be kind.",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                          {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Goodbye!"}]})
    d = import_dataset(db, path).dataset
    assert (d.format, d.num_rows) == ("sharegpt", 1)
    (row,) = rows_of(db, d.id)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_file_that_is_one_bare_list_of_turns(db):
    path = write_json(db.workspace.uploads_dir / "turns.json",
                      [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    d = import_dataset(db, path).dataset
    assert (d.format, d.num_rows) == ("messages", 1)


def test_one_key_wrapper_of_rows_is_still_unwrapped(db):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    d = import_dataset(db, write_json(db.workspace.uploads_dir / "wrapped.json", {"data": rows})).dataset
    assert (d.format, d.num_rows) == ("alpaca", 2)


def test_jsonl_lines_that_are_bare_lists_of_messages(db):
    up = db.workspace.uploads_dir
    path = write_jsonl(up / "bare.jsonl", [
        [{"role": "system", "content": "Terse."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hey."}],
        [{"role": "user", "content": [{"type": "text", "text": "Name?"}]}, {"role": "assistant", "content": "Bot."}],
    ])
    d = import_dataset(db, path).dataset
    assert (d.format, d.num_rows) == ("messages", 2)
    assert rows_of(db, d.id)[1]["messages"][1]["content"] == [{"type": "text", "text": "Bot."}]
    sharegpt = write_jsonl(up / "bare_sharegpt.jsonl", [[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]])
    assert import_dataset(db, sharegpt).dataset.format == "sharegpt"


def test_bare_image_parts_take_the_rows_images_in_order(db):
    """TRL / Qwen2.5-VL cookbook: {"type": "image"} parts, paths in a top-level `images` list."""
    up = db.workspace.uploads_dir
    write(up / "img" / "red.png", png_bytes(color="red"))
    write(up / "img" / "noise.jpg", jpeg_bytes(seed=1))
    path = write_jsonl(up / "trl.jsonl", [
        {"images": ["img/red.png", "img/noise.jpg"], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Red, then noise."}]}]},
        {"images": ["img/noise.jpg"], "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image"}]},
            {"role": "assistant", "content": "Noise."}]},
    ])
    d = import_dataset(db, path).dataset
    assert (d.format, d.num_rows, d.num_images) == ("messages", 2, 2)
    first, second = rows_of(db, d.id)
    assert kinds(first)[0] == ["image", "text", "image"] and kinds(second)[0] == ["text", "image"]
    red, noise = first["messages"][0]["content"][0]["image"], first["messages"][0]["content"][2]["image"]
    assert red.endswith(".png") and noise.endswith(".jpg")


def test_bare_image_parts_from_a_parquet_export(db):
    """datasets' Parquet gives every part both keys: {"type": "image", "text": None, "image": None}."""
    up = db.workspace.uploads_dir
    content = [{"type": "image", "text": None}, {"type": "text", "text": "Colour?"}]
    table = pa.table({
        "images": [[{"bytes": png_bytes(color="green"), "path": None}]],
        "messages": [[{"role": "user", "content": content},
                      {"role": "assistant", "content": [{"type": "text", "text": "Green."}]}]],
    })
    pq.write_table(table, up / "cookbook.parquet")
    d = import_dataset(db, up / "cookbook.parquet").dataset
    assert (d.num_rows, d.num_images) == (1, 1)
    assert kinds(rows_of(db, d.id)[0])[0] == ["image", "text"]


def test_bare_image_part_without_images_is_a_placeholder_mismatch(db):
    path = write_jsonl(db.workspace.uploads_dir / "lost.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]},
        {"role": "assistant", "content": "!"}]}])
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, path)
    (p,) = e.value.problems
    assert (p.code, p.row, p.field) == ("placeholder_mismatch", 1, "images")
    assert nothing_written(db)


@pytest.mark.parametrize("field, value", [("image", "pics/a.jpg"), ("images", ["pics/a.jpg"]),
                                          ("image", ["pics/a.jpg", "pics/b.png"])])
def test_alpaca_keeps_its_images(db, field, value):
    up = db.workspace.uploads_dir
    write(up / "pics" / "a.jpg", jpeg_bytes(seed=2))
    write(up / "pics" / "b.png", png_bytes())
    path = write_json(up / "visual_alpaca.json", [{"instruction": "Describe the picture.", "input": "",
                                                   "output": "Noise.", field: value}])
    d = import_dataset(db, path).dataset
    n = 1 if isinstance(value, str) else len(value)
    assert (d.format, d.num_rows, d.num_images) == ("alpaca", 1, n)
    (row,) = rows_of(db, d.id)
    assert kinds(row)[0] == ["image"] * n + ["text"]  # images before the instruction
    assert row["messages"][0]["content"][-1]["text"] == "Describe the picture."


def test_alpaca_image_placeholder_is_honoured(db):
    up = db.workspace.uploads_dir
    write(up / "a.png", png_bytes())
    path = write_json(up / "a.json", [{"instruction": "Look: <image> What colour?", "output": "Blue.",
                                       "images": ["a.png"]}])
    (row,) = rows_of(db, import_dataset(db, path).dataset.id)
    assert kinds(row)[0] == ["text", "image", "text"]


def test_unknown_shape_names_fields_seen_and_closest_format(db):
    path = write_json(db.workspace.uploads_dir / "odd.json", [{"instruction": "q", "answer": "r"}])
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, path)
    (p,) = e.value.problems
    assert p.code == "unknown_format" and "fields seen: answer, instruction" in p.message
    assert "closest: alpaca (lacks `output`)" in p.message
    assert nothing_written(db)


def test_rows_with_videos_are_refused_not_imported_as_text(db):
    """LLaMA-Factory's mllm_video_demo / lmms-finetune's video.json: the studio trains on images only."""
    up = db.workspace.uploads_dir
    rows = [{"messages": [{"role": "user", "content": "<video>What happens?"},
                          {"role": "assistant", "content": "A dance."}], "videos": ["mllm_demo_data/1.mp4"]},
            {"video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>?"}, {"from": "gpt", "value": "!"}]}]
    for i, row in enumerate(rows):
        with pytest.raises(DatasetImportError) as e:
            import_dataset(db, write_json(up / f"video{i}.json", [row]))
        (p,) = e.value.problems
        assert (p.row, p.code, p.field) == (1, "bad_value", "videos" if i == 0 else "video")
        assert "only text and images" in p.message
    assert nothing_written(db)
