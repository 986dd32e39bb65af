"""Shared fixtures: a fresh workspace + real SQLite database per test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.db import Database  # noqa: E402
from storage.settings import Settings  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    s = Settings.resolve(tmp_path / "workspace")
    monkeypatch.setenv("FTS_WORKSPACE", str(s.workspace))
    monkeypatch.setenv("FTS_DB_URL", s.db_url)
    return s


@pytest.fixture
def db(settings) -> Database:
    d = Database(settings)
    yield d
    d.dispose()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"external test data not found at {SHARED_DATA}")
    return SHARED_DATA
