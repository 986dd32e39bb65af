"""Database set-up, migrations and the workspace's safety rules."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from storage.db import Database
from storage.models import Base, Dataset, Run
from storage.workspace import OutsideWorkspaceError


def test_sqlite_runs_in_wal_mode_with_busy_timeout(db):
    with db.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_migrations_match_the_models(db):
    """A model change without a migration would silently diverge from users' databases."""
    with db.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []


def test_reopening_an_existing_database_keeps_the_history(settings):
    first = Database(settings)
    with first.session() as s:
        s.add(Dataset(name="mine", num_rows=3))
        s.add(Run(name="r1", model_ref="builtin:x", method="lora"))
    first.dispose()
    second = Database(settings)  # runs `alembic upgrade head` again
    with second.session() as s:
        assert [d.name for d in s.query(Dataset)] == ["mine"]
        assert s.query(Run).count() == 1
        version = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(Path(__file__).parents[2] / "storage" / "alembic.ini"))).get_current_head()
    assert version == head and head != "0001"  # every migration applied, the newest included
    second.dispose()


def test_confine_refuses_paths_outside_the_workspace(db):
    ws = db.workspace
    assert ws.confine("uploads/a.json") == ws.root / "uploads" / "a.json"
    for bad in ("../secret", "/etc/passwd", "uploads/../../x"):
        with pytest.raises(OutsideWorkspaceError):
            ws.confine(bad)
    (ws.root / "uploads" / "link").symlink_to("/etc")
    with pytest.raises(OutsideWorkspaceError):
        ws.confine("uploads/link/passwd")


def test_staging_dir_is_renamed_on_success_and_removed_on_error(db):
    ws = db.workspace
    final = ws.dataset_dir(1)
    with ws.staging_dir(final) as stage:
        (stage / "train.jsonl").write_text("{}\n")
        assert not final.exists()
    assert (final / "train.jsonl").exists()
    with pytest.raises(RuntimeError):
        with ws.staging_dir(ws.dataset_dir(2)) as stage:
            (stage / "half.jsonl").write_text("{")
            raise RuntimeError("crash midway")
    assert not ws.dataset_dir(2).exists()
    assert not any(ws.tmp_dir.iterdir())
