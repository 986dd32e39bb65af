"""Helpers for tests that start real worker processes and watch database rows change."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_worker(settings, *extra: str, poll: float = 0.05, own_group: bool = False,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real ``python -m jobs.worker`` on the test's workspace and database. ``own_group``: in a
    process group of its own, so a test can kill the group (as a power cut would) and not itself."""
    env = {**os.environ, "FTS_WORKSPACE": str(settings.workspace), "FTS_DB_URL": settings.db_url, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "jobs.worker", "--poll", str(poll), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=own_group)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with ``own_group=True`` and everything in its group; reap it."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """Call ``predicate`` until it returns something truthy; return that, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
