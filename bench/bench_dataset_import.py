"""Import speed: generate Alpaca rows in a temporary workspace, import them, print rows/s.

    .venv/bin/python bench/bench_dataset_import.py                 # 10,000 rows, target: seconds
    .venv/bin/python bench/bench_dataset_import.py --rows 100000 --dedupe --val-fraction 0.1
    .venv/bin/python bench/bench_dataset_import.py --images 200     # multimodal: rows share 200 JPEGs
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("model data train learn image token answer question studio adapter quick brown fox jumps over lazy dog "
         "describe explain list compare write summarize").split()


def sentence(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_rows(n: int, images: int, rnd: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"instruction": sentence(rnd, rnd.randint(5, 30)), "input": sentence(rnd, 8) if i % 3 == 0 else "",
               "output": sentence(rnd, rnd.randint(20, 200))}
        if images:
            row["instruction"] = "<image>" + row["instruction"]
            row["images"] = [f"img/{i % images}.jpg"]
        rows.append(row)
    return rows


def write_images(folder: Path, count: int, rnd: random.Random) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        im = Image.new("RGB", (640, 480), tuple(rnd.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        (folder / f"{i}.jpg").write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=0, help="distinct images the rows refer to (0: text only)")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--dedupe", action="store_true")
    args = ap.parse_args()

    from storage.db import Database
    from studio.datasets import ImportOptions, import_dataset, read_canonical

    print(describe())
    rnd = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(Path(tmp) / "workspace")
        up = db.workspace.uploads_dir
        if args.images:
            write_images(up / "img", args.images, rnd)
        data = up / "bench.json"
        data.write_text(json.dumps(make_rows(args.rows, args.images, rnd)), encoding="utf-8")
        size_mb = data.stat().st_size / 1e6

        t0 = time.perf_counter()
        result = import_dataset(db, data, ImportOptions(val_fraction=args.val_fraction, dedupe=args.dedupe))
        elapsed = time.perf_counter() - t0
        t1 = time.perf_counter()
        read = sum(1 for _ in read_canonical(db, result.dataset.id))
        read_s = time.perf_counter() - t1
        d = result.dataset
        print(f"imported {d.num_rows:,} rows ({size_mb:.1f} MB JSON, {d.num_images} images) in {elapsed:.2f} s: "
              f"{d.num_rows / elapsed:,.0f} rows/s  [train {d.num_train:,}, validation {d.num_validation:,}]")
        print(f"read back {read:,} train rows in {read_s:.2f} s: {read / read_s:,.0f} rows/s")
        db.dispose()


if __name__ == "__main__":
    main()
