"""Where the studio keeps its state: one workspace folder, and a database URL.

Resolved from (in order) explicit arguments, environment variables, defaults:
``FTS_WORKSPACE`` (default ``./workspace``) and ``FTS_DB_URL`` (default SQLite in the workspace).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WORKSPACE_ENV = "FTS_WORKSPACE"
DB_URL_ENV = "FTS_DB_URL"


@dataclass(frozen=True)
class Settings:
    workspace: Path
    db_url: str

    @classmethod
    def resolve(cls, workspace: str | os.PathLike | None = None, db_url: str | None = None) -> "Settings":
        ws = Path(workspace or os.environ.get(WORKSPACE_ENV) or "workspace").expanduser().resolve()
        url = db_url or os.environ.get(DB_URL_ENV) or f"sqlite:///{ws / 'studio.db'}"
        return cls(workspace=ws, db_url=url)

    def export_to_env(self) -> None:
        """Make child processes (worker, job runners) see the same workspace and database."""
        os.environ[WORKSPACE_ENV] = str(self.workspace)
        os.environ[DB_URL_ENV] = self.db_url
