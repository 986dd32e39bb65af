"""Helpers for browser tests: Debian's Chromium driven by Playwright, and the studio started by launch.py."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return os.environ.get("FTS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(workspace: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("FTS_WORKSPACE", "FTS_DB_URL")}
    # Chromium renders on the same 2 cores: one PyTorch thread keeps the run from spin-waiting
    # (as in the training tests; tests/training/conftest.py)
    env.setdefault("FTS_TORCH_THREADS", "1")
    log = open(workspace.parent / f"studio-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "launch.py", "--workspace", str(workspace), "--port", str(port), *extra],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None:
                raise RuntimeError(f"studio exited: {(workspace.parent / f'studio-{port}.log').read_text()[-3000:]}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("studio did not answer within 90 s")


def stop_studio(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
