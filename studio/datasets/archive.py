"""Zip uploads: checked from the central directory BEFORE anything is extracted.

A zip can name files outside the target folder (``../../x``, ``/etc/x``: zip slip), carry symlinks
that later reads would follow, or expand to far more than it weighs (zip bomb). Every entry is
checked and every problem reported; extraction then re-checks sizes while streaming, because the
sizes in the directory are only claims.
"""
from __future__ import annotations

import stat
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

from studio.datasets import problems as P
from studio.datasets.options import ArchiveLimits
from studio.datasets.problems import Problem

JUNK_PREFIXES = ("__MACOSX/",)
JUNK_NAMES = (".DS_Store", "Thumbs.db")
SMALL_ENTRY = 1024 * 1024  # tiny files compress extremely well; don't flag them for their ratio
CHUNK = 1024 * 1024
# What zipfile raises on damaged or unusual archives: bad CRC (BadZipFile), truncated data (EOFError,
# zlib.error), compression methods it lacks (NotImplementedError), passwords (RuntimeError).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError,
              RuntimeError, ValueError)


def is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def check_zip(path: Path, display: str, limits: ArchiveLimits) -> list[Problem]:
    """Every reason not to extract this archive (empty list: safe)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except ZIP_ERRORS as e:
        return [Problem(display, None, None, P.PARSE_ERROR, f"not a readable zip archive: {e}",
                        "re-create the archive (zip -r data.zip folder/)")]
    found = [p for info in infos for p in _check_entry(info, display, limits)]
    return found + _duplicates(infos, display) + _check_totals(infos, display, limits)


def _duplicates(infos: list[zipfile.ZipInfo], display: str) -> list[Problem]:
    """Two entries with one name: which one wins depends on the tool that extracts, so refuse."""
    names = Counter(_normal(i.filename) for i in infos if not i.is_dir() and not _is_junk(i.filename))
    return [Problem(display, None, name, P.UNSAFE_ARCHIVE, f"entry {name!r} appears {n} times in the archive",
                    "re-create the archive so that every file name appears once")
            for name, n in names.items() if n > 1]


def _normal(name: str) -> str:
    return str(PurePosixPath(name.replace("\\", "/")))


def _check_entry(info: zipfile.ZipInfo, display: str, limits: ArchiveLimits) -> list[Problem]:
    name = info.filename
    found = []

    def bad(code: str, message: str, hint: str) -> None:
        found.append(Problem(display, None, name, code, message, hint))

    if "\0" in name:
        bad(P.UNSAFE_ARCHIVE, f"entry {name!r} has a NUL byte in its name", "rename the file and re-create the archive")
    elif _unsafe_name(name):
        bad(P.UNSAFE_ARCHIVE, f"entry {name!r} points outside the archive folder (absolute path or '..')",
            "re-create the archive from inside the data folder with relative paths")
    if stat.S_ISLNK(info.external_attr >> 16):
        bad(P.UNSAFE_ARCHIVE, f"entry {name!r} is a symbolic link",
            "replace links with the real files before zipping (zip without -y)")
    if info.flag_bits & 0x1:
        bad(P.UNSAFE_ARCHIVE, f"entry {name!r} is encrypted", "upload an archive without a password")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > SMALL_ENTRY and ratio > limits.max_ratio:
        bad(P.ARCHIVE_LIMIT, f"entry {name!r} expands {ratio:.0f}x (limit {limits.max_ratio:.0f}x): looks like a zip bomb",
            "upload the files uncompressed or split the archive")
    return found


def _check_totals(infos: list[zipfile.ZipInfo], display: str, limits: ArchiveLimits) -> list[Problem]:
    found = []
    if len(infos) > limits.max_entries:
        found.append(Problem(display, None, None, P.ARCHIVE_LIMIT,
                             f"archive has {len(infos):,} entries (limit {limits.max_entries:,})",
                             "split the dataset into smaller archives"))
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        found.append(Problem(display, None, None, P.ARCHIVE_LIMIT,
                             f"archive expands to {total:,} bytes (limit {limits.max_total_bytes:,})",
                             "split the dataset into smaller archives"))
    packed = sum(i.compress_size for i in infos)
    if total > SMALL_ENTRY and total / max(packed, 1) > limits.max_ratio:
        found.append(Problem(display, None, None, P.ARCHIVE_LIMIT,
                             f"archive expands {total / max(packed, 1):.0f}x overall (limit {limits.max_ratio:.0f}x): "
                             "looks like a zip bomb", "upload the files uncompressed"))
    return found


def _unsafe_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in PurePosixPath(norm).parts


def _is_junk(name: str) -> bool:
    return name.startswith(JUNK_PREFIXES) or PurePosixPath(name).name in JUNK_NAMES


def extract_zip(path: Path, dest: Path, display: str, limits: ArchiveLimits) -> None:
    """Extract a checked archive into ``dest``; stops if an entry grows past its declared size or
    cannot be read (bad CRC, truncated, unsupported compression)."""
    dest = dest.resolve()
    written = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir() or _is_junk(info.filename):
                continue
            target = (dest / info.filename.replace("\\", "/")).resolve()
            if dest not in target.parents:  # defence in depth; check_zip already refused these
                raise _limit(display, f"entry {info.filename!r} escapes the extraction folder")
            written += _copy_member(zf, info, target, display, limits.max_total_bytes - written)


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, display: str, budget: int) -> int:
    n = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # fails when a file has the folder's name
        with zf.open(info) as src, target.open("wb") as out:
            while chunk := src.read(CHUNK):
                n += len(chunk)
                if n > info.file_size or n > budget:
                    raise _limit(display, f"entry {info.filename!r} expands beyond its declared size")
                out.write(chunk)
    except ZIP_ERRORS as e:
        from studio.datasets.problems import DatasetImportError

        raise DatasetImportError([Problem(display, None, info.filename, P.PARSE_ERROR,
                                          f"entry {info.filename!r} cannot be extracted: {_reason(e)}",
                                          "the archive is damaged; re-create it")]) from None
    return n


def _reason(e: Exception) -> str:
    """Without the extraction folder's path: it is ours, not the person's."""
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _limit(display: str, message: str):
    from studio.datasets.problems import DatasetImportError

    return DatasetImportError([Problem(display, None, None, P.ARCHIVE_LIMIT, message,
                                       "the archive is damaged or crafted; re-create it")])
