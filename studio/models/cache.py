"""Where built-in models are materialised, and how they are built safely.

Rules (from DESIGN.md: a half-written thing is never visible as done):
- A model is built into a hidden sibling folder ``.<name>.<random>.partial`` and renamed into place
  only when complete; the rename is atomic because both live in the same folder (and so on the same
  filesystem, which the workspace's ``tmp/`` would not guarantee when ``FTS_MODEL_CACHE`` points
  elsewhere). A crash leaves at most a ``.partial`` folder, never a folder that looks done.
- An exclusive ``fcntl.flock`` on ``.<name>.lock`` serialises builders across processes (UI, worker,
  training children, parallel test sessions): the second one waits, then finds the model ready.
  Stale ``.partial`` folders are removed only while holding the lock, so no live build is touched.
- The folder name carries a recipe version; changing how a built-in is made means a new version,
  and old folders are simply left behind (never reused by mistake).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

CACHE_ENV = "FTS_MODEL_CACHE"
MANIFEST = "fts_builtin.json"  # written last, inside the staged folder: "this build finished"


def cache_root() -> Path:
    """``$FTS_MODEL_CACHE`` if set, else ``<workspace>/models/builtin``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    from storage.settings import Settings  # the workspace rule lives in one place

    return Settings.resolve().workspace / "models" / "builtin"


def is_complete(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Block until this process holds an exclusive lock on ``lock_path`` (released on exit or crash)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock, atomic rename still holds
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def materialise(final: Path, build: Callable[[Path], dict]) -> Path:
    """Return ``final``, building it first with ``build(staging_folder) -> manifest`` if needed."""
    if is_complete(final):
        return final
    with exclusive_lock(final.parent / f".{final.name}.lock"):
        if is_complete(final):  # another process finished it while we waited
            return final
        _remove_leftovers(final)
        stage = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
        stage.mkdir(parents=True)
        try:
            started = time.time()
            manifest = dict(build(stage))
            manifest["build_seconds"] = round(time.time() - started, 2)
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            _apply_umask(stage)
            os.replace(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return final


def _apply_umask(folder: Path) -> None:
    """Libraries that write through temp files leave some outputs 0600 (model.safetensors is); a
    cache shared by several workers or users needs the permissions the umask asks for."""
    umask = _current_umask()
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _current_umask() -> int:
    # Read, not set-and-restore: os.umask(0) would briefly affect files other threads create.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _remove_leftovers(final: Path) -> None:
    """Under the lock: partial builds of crashed processes, and a final folder without a manifest
    (e.g. someone deleted files by hand) are garbage."""
    for partial in final.parent.glob(f".{final.name}.*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    if final.exists() and not is_complete(final):
        shutil.rmtree(final)
