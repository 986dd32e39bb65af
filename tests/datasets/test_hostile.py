"""Inputs built to crash or sneak through a reader: each becomes a problem with its file, row and
field (never a traceback), and a refused import writes nothing."""
from __future__ import annotations

import io
import json
import warnings
import zipfile

import pytest

from studio.datasets import DatasetImportError, ImportOptions, RowLimits, import_dataset, read_canonical
from tests.datasets.helpers import jpeg_bytes, nothing_written, png_bytes, write, write_json, write_jsonl


def refused(db, path, options=None):
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, path, options or ImportOptions())
    assert nothing_written(db)
    return e.value.problems


def alpaca(i=0, **extra):
    return {"instruction": f"q{i}", "output": f"a{i}", **extra}


def chat(user="<image>What?", images=None):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "A."}],
            **({"images": images} if images is not None else {})}


# -- values no real dataset holds ------------------------------------------------------------------
def test_json_nested_deeper_than_the_parser_can_go_is_one_bad_row(db):
    deep = "[" * 50_000 + "]" * 50_000
    text = "[\n" + json.dumps(alpaca(1)) + ",\n" + '{"instruction": "x", "output": ' + deep + "},\n" + \
           json.dumps(alpaca(3)) + "\n]"
    path = write(db.workspace.uploads_dir / "deep.json", text)
    (p,) = refused(db, path)
    assert (p.file, p.row, p.line, p.code) == ("deep.json", 2, 3, "too_deep")
    r = import_dataset(db, path, ImportOptions(on_error="skip"))
    assert (r.dataset.num_rows, r.report.skipped_by_code) == (2, {"too_deep": 1})


def test_nesting_beyond_the_row_limit_names_the_field(db):
    nested: object = "end"
    for _ in range(80):
        nested = [nested]
    path = write_jsonl(db.workspace.uploads_dir / "deep.jsonl", [alpaca(0), alpaca(1, meta={"x": nested})])
    (p,) = refused(db, path)
    assert (p.row, p.line, p.code) == (2, 2, "too_deep") and p.field.startswith("meta.x[0]")
    deep_line = write(db.workspace.uploads_dir / "deeper.jsonl", '{"instruction": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (p,) = refused(db, deep_line)
    assert (p.row, p.code) == (1, "too_deep")


def test_a_20000_digit_integer(db):
    text = json.dumps([alpaca(0), {"instruction": "n", "output": "__N__"}]).replace('"__N__"', "9" * 20_000)
    (p,) = refused(db, write(db.workspace.uploads_dir / "big.json", text))
    assert (p.row, p.field, p.code) == (2, "output", "number_too_large") and "20,000 digits" in p.message
    line = '{"instruction": "n", "output": "x", "id": ' + "1" * 100 + "}\n"
    (p,) = refused(db, write(db.workspace.uploads_dir / "big.jsonl", line))
    assert (p.row, p.field, p.code) == (1, "id", "number_too_large")


def test_lone_utf16_surrogate(db):
    text = '[{"instruction": "fine", "output": "ok"}, {"instruction": "half \\ud83d of a smile", "output": "x"}]'
    (p,) = refused(db, write(db.workspace.uploads_dir / "sur.json", text))
    assert (p.row, p.field, p.code) == (2, "instruction", "encoding") and "\\ud83d" in p.message


def test_nul_bytes_in_text_and_image_paths(db):
    up = db.workspace.uploads_dir
    write(up / "a.png", png_bytes())
    rows = [chat(images=["a.png"]), chat(images=["a.png\u0000.jpg"]), {"instruction": "x\u0000y", "output": "z"}]
    path = write_jsonl(up / "nul.jsonl", rows[:2])
    (p,) = refused(db, path)
    assert (p.row, p.field, p.code) == (2, "images[0]", "nul_byte")
    (p,) = refused(db, write_json(up / "nul.json", [rows[2]]))
    assert (p.row, p.field, p.code) == (1, "instruction", "nul_byte")
    write(up / "folder" / "cat.png", png_bytes())
    write(up / "folder" / "cat.txt", "A cat\x00 with a NUL.")
    (p,) = refused(db, up / "folder")
    assert (p.row, p.field, p.code) == (1, "caption", "nul_byte")


def test_text_field_limit_is_256_kib_and_configurable(db):
    path = write_json(db.workspace.uploads_dir / "long.json", [alpaca(0), {"instruction": "x", "output": "y" * 1024**2}])
    (p,) = refused(db, path)
    assert (p.row, p.field, p.code) == (2, "output", "text_too_long") and "limit 262,144" in p.message
    options = ImportOptions(rows=RowLimits(max_text_bytes=2 * 1024**2))
    assert import_dataset(db, path, options).dataset.num_rows == 2


def test_image_shape_the_processor_cannot_take(db):
    """Qwen2.5-VL's smart_resize raises for aspect ratios above 200."""
    up = db.workspace.uploads_dir
    write(up / "strip.png", png_bytes(size=(4020, 20)))  # 201:1
    write(up / "wide.png", png_bytes(size=(4000, 20)))  # 200:1, still accepted
    problems = refused(db, write_json(up / "d.json", [chat(images=["wide.png"]), chat(images=["strip.png"])]))
    assert [(p.row, p.field, p.code) for p in problems] == [(2, "images", "image_shape")]
    assert "4020x20" in problems[0].message and "200" in problems[0].message
    assert import_dataset(db, up / "d.json", ImportOptions(max_aspect_ratio=300)).dataset.num_images == 2


# -- archives --------------------------------------------------------------------------------------
def test_zip_entry_with_a_bad_crc(db):
    image = png_bytes(size=(40, 40), color="red")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("data.json", json.dumps([chat(images=["a.png"])]))
        zf.writestr("a.png", image)
    raw = bytearray(buf.getvalue())
    at = raw.index(image) + len(image) // 2
    raw[at] ^= 0xFF  # one flipped byte inside the stored entry: its CRC no longer matches
    (p,) = refused(db, write(db.workspace.uploads_dir / "crc.zip", bytes(raw)))
    assert (p.file, p.field, p.code) == ("crc.zip", "a.png", "parse_error") and "CRC" in p.message


def test_zip_with_duplicate_names(db):
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name" and writes it anyway
        zf.writestr("data.json", json.dumps([alpaca()]))
        zf.writestr("data.json", json.dumps([alpaca(1)]))
    (p,) = refused(db, write(db.workspace.uploads_dir / "dup.zip", buf.getvalue()))
    assert (p.field, p.code) == ("data.json", "unsafe_archive") and "2 times" in p.message


# -- links -----------------------------------------------------------------------------------------
def test_caption_file_linked_to_outside_the_folder(db, tmp_path):
    secret = write(tmp_path / "secret.txt", "root:x:0:0")
    folder = db.workspace.uploads_dir / "pics"
    write(folder / "a.png", png_bytes())
    (folder / "a.txt").symlink_to(secret)
    (p,) = refused(db, folder)
    assert (p.row, p.field, p.code) == (1, "caption", "symlink")


def test_image_linked_to_another_file_inside_the_workspace_is_not_followed(db):
    up = db.workspace.uploads_dir
    write(up / "elsewhere" / "real.png", png_bytes())
    write_json(up / "case" / "data.json", [chat(images=["pic.png"])])
    (up / "case" / "pic.png").symlink_to(up / "elsewhere" / "real.png")
    (p,) = refused(db, up / "case" / "data.json")
    assert (p.row, p.code) == (1, "missing_image") and "symbolic link" in p.message
    (up / "case" / "imgdir").symlink_to(up / "elsewhere", target_is_directory=True)
    (p,) = refused(db, write_json(up / "case" / "data.json", [chat(images=["imgdir/real.png"])]))
    assert "symbolic link" in p.message


def test_a_folder_whose_only_data_file_is_a_link(db, tmp_path):
    outside = write_json(tmp_path / "data.json", [alpaca()])
    folder = db.workspace.uploads_dir / "linked"
    folder.mkdir(parents=True)
    (folder / "data.json").symlink_to(outside)
    (p,) = refused(db, folder)
    assert p.code == "symlink" and "data.json" in p.message


# -- tables ----------------------------------------------------------------------------------------
def test_csv_with_an_unterminated_quote_is_refused_whole(db):
    text = 'instruction,output\nfine,ok\n"never closed,x\nthird,row\n'
    problems = refused(db, write(db.workspace.uploads_dir / "q.csv", text), ImportOptions(on_error="skip"))
    (p,) = problems
    assert (p.row, p.line, p.code) == (None, 3, "parse_error") and "never closed" in p.message


def test_csv_with_a_stray_quote_inside_a_quoted_field(db):
    (p,) = refused(db, write(db.workspace.uploads_dir / "s.csv", 'instruction,output\n"a"b,c\n'))
    assert (p.row, p.code) == (None, "parse_error") and "quot" in p.hint


def test_table_without_a_required_column_is_refused_whole(db):
    up = db.workspace.uploads_dir
    write(up / "a.png", png_bytes())
    path = write(up / "caps.csv", "image_path,notes\na.png,some note\na.png,other\n")
    (p,) = refused(db, path, ImportOptions(format="caption", on_error="skip"))
    assert (p.row, p.code) == (None, "missing_column") and "a caption column" in p.message
    assert "image_path, notes" in p.message
    (p,) = refused(db, write(up / "qa.csv", "instruction,answer\nq,a\n"), ImportOptions(format="alpaca"))
    assert p.code == "missing_column" and "`output`" in p.message
    ok = import_dataset(db, path, ImportOptions(format="caption", column_map={"notes": "caption"}))
    assert ok.dataset.num_rows == 2


def test_no_traceback_for_a_json_scalar_or_garbage(db):
    up = db.workspace.uploads_dir
    for name, content in [("n.json", "42"), ("g.json", b"\x00\x01\x02garbage"), ("e.jsonl", "\n\n"),
                          ("u.json", '"\\udfff"'), ("f.json", "[1e999999, NaN]")]:
        problems = refused(db, write(up / name, content))
        assert problems and all(p.file == name for p in problems)


def test_good_rows_around_hostile_ones_import_in_skip_mode(db):
    up = db.workspace.uploads_dir
    write(up / "ok.jpg", jpeg_bytes())
    rows = [chat(images=["ok.jpg"]), {"instruction": "x\u0000", "output": "y"}, chat(images=["ok.jpg\u0000"]),
            alpaca(4, id=10**70), chat("<image>again?", images=["ok.jpg"])]
    r = import_dataset(db, write_jsonl(up / "mixed.jsonl", rows), ImportOptions(on_error="skip", format="messages"))
    assert r.dataset.num_rows == 2 and r.report.skipped == 3
    assert len(list(read_canonical(db, r.dataset.id))) == 2


def test_linked_image_in_an_image_folder_is_left_out_with_a_warning(db, tmp_path):
    folder = db.workspace.uploads_dir / "photos"
    write(folder / "real.png", png_bytes())
    write(folder / "real.txt", "A blue square.")
    (folder / "linked.png").symlink_to(write(tmp_path / "private.png", png_bytes(color="red")))
    write(folder / "linked.txt", "A red square.")
    r = import_dataset(db, folder)
    assert (r.dataset.num_rows, r.dataset.num_images) == (1, 1)
    assert any("'linked.png' is a symbolic link" in w for w in r.report.warnings)
