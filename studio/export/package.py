"""Packaging an export folder as one zip file, streamed from disk.

Files are copied into the archive in 8 MiB chunks: memory stays flat however large the shards
are (a 70 B model is ~140 GB of bf16). Weights are stored, not deflated: safetensors barely
compress and deflating gigabytes costs minutes of CPU for a few percent. Zip64 is used
automatically for members or archives beyond 4 GiB.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable

from studio.export.verify import sha256_file

CHUNK = 8 << 20
STORED_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".model")

OnBytes = Callable[[int], None]


def folder_files(folder: Path) -> list[Path]:
    """Regular files under ``folder`` in a stable order; symlinks are refused, since they could
    smuggle a file from outside the workspace into a download."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; exports contain regular files only")
        if path.is_file():
            files.append(path)
    return files


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def write_zip(folder: Path, archive: Path, *, on_bytes: OnBytes | None = None) -> list[str]:
    """Zip ``folder`` as ``<folder.name>/...`` into ``archive``; returns the member names.
    ``on_bytes(n)`` is called after every chunk (progress, and the place a cancel can interrupt)."""
    members = []
    with zipfile.ZipFile(archive, "w", allowZip64=True) as zf:
        for path in folder_files(folder):
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            _add_file(zf, path, name, on_bytes)
            members.append(name)
    return members


def _add_file(zf: zipfile.ZipFile, path: Path, name: str, on_bytes: OnBytes | None) -> None:
    info = zipfile.ZipInfo.from_file(path, name)
    info.compress_type = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # readable by the downloader whatever the staging umask was
    with open(path, "rb") as src, zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
        while block := src.read(CHUNK):
            dst.write(block)
            if on_bytes:
                on_bytes(len(block))


def describe_archive(archive: Path) -> dict:
    return {"size_bytes": os.path.getsize(archive), "sha256": sha256_file(archive)}
