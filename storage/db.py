"""Engine and sessions. SQLite gets WAL + a busy timeout so the UI, the worker and job processes
can share one database file; other URLs (PostgreSQL) are used as given."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.settings import Settings
from storage.workspace import Workspace

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(dbapi_conn, _record) -> None:
    # Python's sqlite3 opens transactions lazily; let SQLAlchemy's BEGIN decide instead.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest revision with alembic; never drops a user's history."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """One engine + session factory per process, and the workspace its rows describe.
    Create it once (``Database.open()``) and pass it down."""

    def __init__(self, settings: Settings, migrate: bool = True):
        self.settings = settings
        self.workspace = Workspace(settings.workspace).ensure()
        self.engine = make_engine(settings.db_url)
        if migrate:
            upgrade_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, workspace: str | None = None, db_url: str | None = None, migrate: bool = True) -> "Database":
        return cls(Settings.resolve(workspace, db_url), migrate=migrate)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def integrity_ok(self) -> bool:
        if not self.settings.db_url.startswith("sqlite"):
            return True
        with self.engine.connect() as c:
            return c.execute(text("PRAGMA integrity_check")).scalar() == "ok"

    def dispose(self) -> None:
        self.engine.dispose()


def get_or_raise(session: Session, model: type, row_id: int, error: type[Exception], what: str | None = None):
    """The row with this id, or ``error("no <what> with id N")``: the one "get the row or raise"."""
    row = session.get(model, row_id)
    if row is None:
        raise error(f"no {what or model.__tablename__.rstrip('s')} with id {row_id}")
    return row
