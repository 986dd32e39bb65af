"""Damaged copies of good files (bytes flipped, inserted, cut) end as a clean import or a clean
refusal: never a traceback, and never the importer's catch-all ``internal_error``."""
from __future__ import annotations

import json
import random

import pytest

from studio.datasets import DatasetImportError, ImportOptions, import_dataset
from tests.datasets.helpers import jpeg_bytes, png_bytes, write, zip_with

ROWS = [
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
                  {"role": "assistant", "content": "Blue, 青."}], "images": ["img/a.png"]},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5", "history": [["Hi", "Hello"]], "n": 12345},
    {"image": "img/b.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Noise."}]},
]


def seeds(up):
    write(up / "img" / "a.png", png_bytes())
    write(up / "img" / "b.jpg", jpeg_bytes(size=(32, 24)))
    return {
        "rows.json": json.dumps(ROWS[:1] * 3, ensure_ascii=False).encode(),
        "rows.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode(),
        "caps.csv": 'image_path,caption\nimg/a.png,"A blue, square ""thing""."\nimg/b.jpg,Noise\n'.encode(),
        "bundle.zip": zip_with(up.parent / "seed.zip", {"d/data.json": json.dumps(ROWS[2:] * 2),
                                                       "img/b.jpg": jpeg_bytes(size=(32, 24))}).read_bytes(),
        "pic_rows.json": json.dumps([dict(ROWS[2], image="img/m.png")]).encode(),
    }


def mutate(data: bytes, rnd: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        at = rnd.randrange(len(data))
        action = rnd.choice(("flip", "insert", "delete", "cut"))
        if action == "flip":
            data[at] = rnd.choice(b'\x00\xff"[]{},\\\n\xed\xa0\x80') if rnd.random() < 0.6 else rnd.randrange(256)
        elif action == "insert":
            data[at:at] = rnd.choice([b"[" * 3000, b"9" * 5000, b"\\ud800", b"\x00", b'"', b"\r\n", b"\xc3"])
        elif action == "delete":
            del data[at:at + rnd.randint(1, 20)]
        else:
            del data[at:]
        if not data:
            data = bytearray(b"[")
    return bytes(data)


@pytest.mark.parametrize("seed", range(6))
def test_damaged_files_never_crash_the_importer(db, seed):
    up = db.workspace.uploads_dir
    files = seeds(up)
    rnd = random.Random(seed)
    outcomes = {"imported": 0, "refused": 0}
    for i in range(25):
        name = rnd.choice(sorted(files))
        data = mutate(files[name], rnd)
        if name == "pic_rows.json":  # a damaged image instead of a damaged data file
            write(up / "img" / "m.png", mutate(png_bytes(size=(16, 16)), rnd))
            data = files[name]
        path = write(up / f"case{seed}_{i}" / name, data)
        try:
            import_dataset(db, path, ImportOptions(on_error=rnd.choice(("fail", "skip"))))
            outcomes["imported"] += 1
        except DatasetImportError as e:
            assert e.problems and not [p for p in e.problems if p.code == "internal_error"], str(e)
            assert all(str(p) for p in e.problems)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
