"""Files that arrive from the browser: copied into the workspace before any service reads them.

Services only accept paths inside the workspace (``Workspace.confine``); the web layer hands over
the temporary file the server received, and this copies it to ``uploads/<random>/<safe name>``.
"""
from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from storage.db import Database

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """Keep the extension and a readable stem; drop directories and odd characters."""
    base = Path(name.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip("._") or "upload"
    return cleaned[-120:]


def store_upload(db: Database, received: str | Path, original_name: str | None = None) -> Path:
    """Copy a received file into the workspace's uploads folder; returns the new path."""
    src = Path(received)
    if not src.is_file():
        raise FileNotFoundError(f"the uploaded file {original_name or src.name} did not arrive; upload it again")
    dest_dir = db.workspace.uploads_dir / uuid.uuid4().hex[:12]
    dest_dir.mkdir(parents=True)
    dest = dest_dir / safe_filename(original_name or src.name)
    shutil.copyfile(src, dest)
    return dest
