"""Hostile and malformed uploads: each gets a clear error naming the row, and nothing is written."""
from __future__ import annotations

import json

import pytest

from studio.datasets import ArchiveLimits, DatasetImportError, ImportOptions, import_dataset
from tests.datasets.helpers import jpeg_bytes, nothing_written, png_bytes, png_claiming, write, write_json, zip_with


def refused(db, path, options=None):
    """Import must fail, write nothing, and return the problems."""
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, path, options or ImportOptions())
    assert nothing_written(db)
    return e.value.problems


def chat(user="Hi", assistant="Hello", images=None):
    row = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}
    if images is not None:
        row["images"] = images
    return row


def test_broken_json_reports_line_and_column(db):
    path = write(db.workspace.uploads_dir / "broken.json",
                 '[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]\n')
    (p,) = refused(db, path)
    assert (p.code, p.line, p.column, p.row) == ("parse_error", 3, 22, None)
    assert str(p).startswith("broken.json line 3, column 22: not valid JSON: Expecting ',' delimiter")


def test_broken_jsonl_lines_are_each_reported(db):
    path = write(db.workspace.uploads_dir / "d.jsonl",
                 json.dumps(chat()) + "\n{\"messages\": [\n" + json.dumps(chat()) + "\n[1, 2]\n")
    problems = refused(db, path)
    assert [(p.row, p.line, p.code) for p in problems] == [(2, 2, "parse_error"), (4, 4, "bad_value")]


def test_latin1_bytes_report_row_field_and_byte_offset(db):
    good = json.dumps([{"instruction": "Say hi", "output": "Hi"}, {"instruction": "Cafe", "output": "ok"}])
    raw = good.encode().replace(b"Cafe", b"Caf\xe9")
    path = write(db.workspace.uploads_dir / "latin1.json", raw)
    (p,) = refused(db, path)
    offset = raw.index(b"\xe9")
    assert (p.code, p.row, p.field) == ("encoding", 2, "instruction")
    assert f"byte 0xE9 at byte offset {offset}" in p.message and "UTF-8" in p.hint


def test_latin1_in_jsonl_and_csv(db):
    up = db.workspace.uploads_dir
    jsonl = (json.dumps({"instruction": "a", "output": "b"}) + "\n").encode() + b'{"instruction": "\xe9t\xe9", "output": "x"}\n'
    (p,) = refused(db, write(up / "bad.jsonl", jsonl))
    offset = jsonl.index(b"\xe9")
    assert (p.code, p.row, p.line) == ("encoding", 2, 2) and f"byte offset {offset}" in p.message
    csv_bytes = b"instruction,output\nhello,world\nna\xefve,yes\n"
    (p,) = refused(db, write(up / "bad.csv", csv_bytes))
    assert (p.code, p.row, p.field, p.line) == ("encoding", 2, "instruction", 3)
    offset = csv_bytes.index(b"\xef")
    assert f"byte offset {offset}" in p.message


def test_missing_image(db):
    up = db.workspace.uploads_dir
    write(up / "imgs" / "ok.png", png_bytes())
    path = write_json(up / "data.json", [chat("<image>What?", images=["imgs/ok.png"]),
                                         chat("<image>What?", images=["imgs/gone.jpg"])])
    (p,) = refused(db, path)
    assert (p.code, p.row, p.field) == ("missing_image", 2, "images")
    assert "imgs/gone.jpg" in p.message and "relative to the data file" in p.hint


def test_image_outside_the_upload_is_refused(db):
    path = write_json(db.workspace.uploads_dir / "data.json", [chat("<image>x", images=["/etc/hostname"])])
    (p,) = refused(db, path)
    assert p.code == "missing_image" and "outside" in p.message


def test_truncated_jpeg(db):
    up = db.workspace.uploads_dir
    data = jpeg_bytes(size=(128, 128))
    write(up / "cut.jpg", data[: len(data) // 2])
    (p,) = refused(db, write_json(up / "data.json", [chat("<image>x", images=["cut.jpg"])]))
    assert (p.code, p.row) == ("corrupt_image", 1) and "truncated" in p.message


@pytest.mark.parametrize("w, h", [(100_000, 100_000), (10_000, 10_000)])
def test_image_bomb_header_is_refused_without_decoding(db, w, h):
    """Beyond Pillow's own bomb limit (DecompressionBombError) and beyond ours (50 MP)."""
    up = db.workspace.uploads_dir
    write(up / "bomb.png", png_claiming(w, h))
    (p,) = refused(db, write_json(up / "data.json", [chat("<image>x", images=["bomb.png"])]))
    assert (p.code, p.row) == ("image_too_large", 1) and "too large" in p.message


def test_unsupported_image_type(db):
    up = db.workspace.uploads_dir
    write(up / "pic.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>')
    (p,) = refused(db, write_json(up / "data.json", [chat("<image>x", images=["pic.svg"])]))
    assert p.code == "unsupported_image"


def test_placeholder_count_mismatch_message(db):
    up = db.workspace.uploads_dir
    write(up / "a.png", png_bytes())
    rows = [chat("<image>one"), chat("ok"), chat("<image><image>two", images=["a.png"]), chat("none", images=["a.png"])]
    problems = refused(db, write_json(up / "data.json", rows))
    assert [(p.row, p.code) for p in problems] == [(1, "placeholder_mismatch"), (3, "placeholder_mismatch"),
                                                   (4, "placeholder_mismatch")]
    assert str(problems[1]) == ("data.json row 3, field `images`: 2 <image> placeholders but 1 image — "
                                "add the missing image path to `images` or remove a placeholder")


def test_role_order_and_empty_turns(db):
    rows = [
        {"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                      {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "wizard", "content": "a"}, {"role": "assistant", "content": "b"}]},
        chat(),
    ]
    problems = refused(db, write_json(db.workspace.uploads_dir / "roles.json", rows))
    got = [(p.row, p.code) for p in problems]
    assert got == [(1, "role_order"), (2, "role_order"), (3, "role_order"), (4, "empty_turn"), (5, "unknown_role")]
    assert problems[0].field == "messages[0].content" and "should be 'user'" in problems[0].message
    assert "last turn is 'user'" in problems[1].message


def test_alpaca_empty_output_is_an_empty_turn(db):
    problems = refused(db, write_json(db.workspace.uploads_dir / "a.json",
                                      [{"instruction": "q", "input": "", "output": ""}]))
    assert [(p.row, p.code, p.field) for p in problems] == [(1, "empty_turn", "output")]


@pytest.mark.parametrize("content", ["[]", "", "instruction,output\n"])
def test_empty_dataset(db, content):
    name = "empty.csv" if content.startswith("instruction") else "empty.json"
    problems = refused(db, write(db.workspace.uploads_dir / name, content))
    assert problems[-1].code == "empty_dataset"


def test_every_problem_is_reported_at_once(db):
    up = db.workspace.uploads_dir
    rows = [chat(), chat(assistant=""), chat("<image>x", images=["nope.png"]), chat(), {"messages": "oops"}]
    problems = refused(db, write_json(up / "many.json", rows))
    assert [(p.row, p.code) for p in problems] == [(2, "empty_turn"), (3, "missing_image"), (5, "bad_value")]


# -- archives ---------------------------------------------------------------------------------------
def test_zip_slip_entries_are_refused_before_extraction(db):
    up = db.workspace.uploads_dir
    path = zip_with(up / "slip.zip", {"data.json": json.dumps([chat()]), "../../evil.txt": "x", "/abs.txt": "y"})
    problems = refused(db, path)
    assert {(p.code, p.field) for p in problems} == {("unsafe_archive", "../../evil.txt"), ("unsafe_archive", "/abs.txt")}
    assert not (db.workspace.root.parent / "evil.txt").exists()


def test_symlink_entry_is_refused(db):
    path = zip_with(db.workspace.uploads_dir / "link.zip", {"data.json": json.dumps([chat()])},
                    symlinks={"secret.png": "/etc/passwd"})
    (p,) = refused(db, path)
    assert p.code == "unsafe_archive" and "symbolic link" in p.message


def test_zip_with_too_many_entries(db):
    entries = {f"img/{i}.txt": "x" for i in range(30)} | {"data.json": json.dumps([chat()])}
    path = zip_with(db.workspace.uploads_dir / "many.zip", entries)
    (p,) = refused(db, path, ImportOptions(archive=ArchiveLimits(max_entries=20)))
    assert p.code == "archive_limit" and "31 entries (limit 20)" in p.message


def test_zip_too_large_and_zip_bomb_ratio(db):
    up = db.workspace.uploads_dir
    path = zip_with(up / "big.zip", {"data.json": json.dumps([chat()]), "pad.bin": b"\0" * (3 * 1024 * 1024)})
    problems = refused(db, path, ImportOptions(archive=ArchiveLimits(max_total_bytes=2 * 1024 * 1024)))
    codes = [(p.code, p.message) for p in problems]
    assert any("expands to" in m and "limit 2,097,152" in m for _, m in codes)
    assert any("zip bomb" in m for _, m in codes)  # 3 MiB of zeros compress ~1000x


def test_not_a_zip(db):
    (p,) = refused(db, write(db.workspace.uploads_dir / "fake.zip", b"not a zip at all"))
    assert p.code == "parse_error" and "zip" in p.message


def test_path_outside_workspace_is_refused(db, tmp_path):
    from storage.workspace import OutsideWorkspaceError

    outside = write_json(tmp_path / "elsewhere.json", [{"instruction": "a", "output": "b"}])
    with pytest.raises(OutsideWorkspaceError):
        import_dataset(db, outside)
    assert nothing_written(db)


def test_invalid_options_are_all_reported(db):
    path = write_json(db.workspace.uploads_dir / "a.json", [{"instruction": "a", "output": "b"}])
    problems = refused(db, path, ImportOptions(format="nope", val_fraction=1.5, limit=0, on_error="ignore"))
    assert len(problems) == 4 and all(p.field == "options" for p in problems)


def test_symlinked_image_in_an_uploaded_folder_is_not_followed(db, tmp_path):
    secret = write(tmp_path / "secret.png", png_bytes())
    folder = db.workspace.uploads_dir / "pics"
    folder.mkdir(parents=True)
    (folder / "a.png").symlink_to(secret)
    (p,) = refused(db, write_json(folder / "data.json", [chat("<image>x", images=["a.png"])]))
    assert (p.code, p.row) == ("missing_image", 1) and "outside" in p.message


def test_caption_table_problems_name_the_column(db):
    up = db.workspace.uploads_dir
    write(up / "ok.png", png_bytes())
    path = write(up / "caps.csv", "image_path,caption\nok.png,Fine.\nmissing.jpg,Lost.\nok.png,\n,No image.\n")
    problems = refused(db, path)
    assert [(p.row, p.line, p.field, p.code) for p in problems] == [
        (2, 3, "image_path", "missing_image"), (3, 4, "caption", "empty_turn"), (4, 5, "image_path", "missing_image")]
