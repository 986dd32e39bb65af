"""Builders for real-world-shaped test files: images, hostile PNGs/zips, uploads in the workspace."""
from __future__ import annotations

import io
import json
import random
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image


def jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    """A noisy JPEG (noise: so truncating it really cuts image data)."""
    rnd = random.Random(seed)
    im = Image.new("RGB", size)
    im.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bytes(size=(32, 32), color="blue") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def write_json(path: Path, rows) -> Path:
    return write(path, json.dumps(rows, ensure_ascii=False, indent=1))


def write_jsonl(path: Path, rows) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def upload(db, src: Path, name: str | None = None) -> Path:
    """Copy shared data into ``<workspace>/uploads`` as the UI's upload would."""
    target = db.workspace.uploads_dir / (name or src.name)
    if src.is_dir():
        shutil.copytree(src, target)
    else:
        shutil.copy2(src, target)
    return target


def zip_with(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None,
             compression=zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def nothing_written(db) -> bool:
    """A refused import leaves no dataset folder, no row and no staging leftovers."""
    from storage.models import Dataset

    ws = db.workspace
    with db.session() as s:
        rows = s.query(Dataset).count()
    leftovers = list(ws.tmp_dir.iterdir()) if ws.tmp_dir.exists() else []
    return rows == 0 and not any(ws.datasets_dir.iterdir()) and not leftovers
