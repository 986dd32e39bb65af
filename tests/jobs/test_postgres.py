"""The queue on PostgreSQL (shared deployments): set FTS_TEST_POSTGRES_URL to a scratch database,
e.g. postgresql+psycopg://postgres@127.0.0.1:5433/fts. Skipped otherwise."""
from __future__ import annotations

import collections
import os

import pytest
from sqlalchemy import text

from jobs import queue
from storage.db import Database
from storage.models import JobStatus
from storage.settings import Settings
from tests.conftest import require
from tests.jobs.test_queue_worker import status
from tests.processes import start_worker, wait_for

PG_URL = os.environ.get("FTS_TEST_POSTGRES_URL")


@pytest.fixture
def pg(tmp_path, monkeypatch):
    require(bool(PG_URL), "FTS_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)")
    settings = Settings.resolve(tmp_path / "ws", PG_URL)
    with Database(settings, migrate=False).engine.begin() as c:
        c.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    monkeypatch.setenv("FTS_WORKSPACE", str(settings.workspace))
    monkeypatch.setenv("FTS_DB_URL", settings.db_url)
    db = Database(settings)
    yield db
    db.dispose()


def test_two_workers_on_postgres_run_each_job_exactly_once(pg):
    ids = [queue.enqueue(pg, "system.echo", {"message": f"m{i}"}) for i in range(50)]
    workers = [start_worker(pg.settings), start_worker(pg.settings)]
    try:
        wait_for(lambda: all(status(pg, i) == JobStatus.SUCCEEDED for i in ids), timeout=90)
    finally:
        for w in workers:
            w.terminate()
            w.wait(10)
    runs = collections.Counter(int(line.split()[0]) for line in
                               (pg.workspace.root / "echo.log").read_text().splitlines())
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}


def test_a_waiting_chat_moves_to_the_cpu_on_postgres(pg):
    from studio.inference import placement
    from tests.inference.test_placement import waiting_chat

    _, job_id = waiting_chat(pg, "gpu")
    assert placement.memory_wait(pg, job_id)["text"].startswith("run 'big run' holds 14.0 GiB of GPU 0")
    placement.use_cpu(pg, job_id)
    job = queue.get(pg, job_id)
    assert job.payload["device"] == "cpu" and job.status == JobStatus.QUEUED
    assert queue.claim_job(pg, job_id, "w") is not None
