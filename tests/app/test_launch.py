"""launch.py as a user runs it: a real process serving HTTP on loopback, with a supervised worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.browser.browser import free_port
from tests.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def worker_pids(launcher: subprocess.Popen) -> list[int]:
    """Live worker children; a killed worker the launcher has not reaped yet (a zombie) is not one."""
    pids = []
    for p in psutil.Process(launcher.pid).children():
        try:
            if "jobs.worker" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return pids


@pytest.fixture
def studio(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTS_")}
    proc = subprocess.Popen([sys.executable, "launch.py", "--workspace", str(tmp_path / "ws"), "--port", str(port),
                             "--no-prepare", "--auth", "ada:s3cret"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/") is not None, timeout=60)
        yield proc, port, tmp_path / "ws"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_studio_serves_on_loopback_with_login_and_a_supervised_worker(studio):
    proc, port, ws = studio
    assert (ws / "studio.db").exists()
    listening = [c for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"]
    assert [c.laddr.ip for c in listening if c.laddr.port == port] == ["127.0.0.1"]
    # --auth: the API refuses an anonymous client, the login page is served.
    assert http_status(f"http://127.0.0.1:{port}/config") == 401

    first = wait_for(lambda: worker_pids(proc), timeout=30)
    os.kill(first[0], signal.SIGKILL)
    restarted = wait_for(lambda: [p for p in worker_pids(proc) if p != first[0]], timeout=30)
    assert restarted

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(30) == 0
    assert not psutil.pid_exists(restarted[0]) or psutil.Process(restarted[0]).status() == "zombie"
    assert http_status(f"http://127.0.0.1:{port}/") is None
