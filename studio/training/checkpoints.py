"""Checkpoints that are never mistaken for complete when they are not.

The HF Trainer writes ``checkpoint-<step>/`` file by file. Only after it returns (``on_save``) do
we write a marker file into the folder, atomically and last; a folder without the marker (the
process was killed while saving) is ignored by ``latest_complete`` and removed by ``prune``.
The Trainer's own rotation is switched off (it could delete the last complete checkpoint while
the newest is still unmarked); ``prune`` keeps the newest ``keep`` complete ones instead.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

MARKER = "studio-complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(folder: Path) -> int | None:
    m = _NAME.match(folder.name)
    return int(m.group(1)) if m else None


def _all(checkpoints_dir: Path) -> list[Path]:
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=step_of)


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def mark_complete(folder: Path, step: int) -> None:
    """Write the marker via a temporary name + rename, after syncing the checkpoint's files."""
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"step": step, "time": time.time()}), encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MARKER)


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    return [p for p in _all(checkpoints_dir) if is_complete(p)]


def latest_complete(checkpoints_dir: Path) -> Path | None:
    done = complete_checkpoints(checkpoints_dir)
    return done[-1] if done else None


def prune(checkpoints_dir: Path, keep: int) -> list[Path]:
    """Delete incomplete checkpoints and all but the newest ``keep`` complete ones."""
    removed = []
    done = complete_checkpoints(checkpoints_dir)
    keep_set = set(done[-keep:]) if keep > 0 else set()
    for folder in _all(checkpoints_dir):
        if folder not in keep_set:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def remove_incomplete(checkpoints_dir: Path) -> list[Path]:
    """Before resuming: half-written folders of a killed run would be written over file by file."""
    removed = [p for p in _all(checkpoints_dir) if not is_complete(p)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed
