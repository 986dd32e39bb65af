"""Helpers for browser tests: Debian's Chromium driven by Playwright, and the studio started by launch.py."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
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


@contextlib.contextmanager
def running_studio(workspace: Path, *extra: str) -> Iterator[str]:
    """launch.py on ``workspace`` at a free loopback port for the length of a test; yields its URL."""
    port = free_port()
    proc = start_studio(workspace, port, *extra)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_studio(proc)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def set_max_new_tokens(page, n: int) -> None:
    """Chat tab: open the generation settings and cap the answers' length."""
    page.get_by_text("Generation settings").first.click()
    tokens = page.locator(".block", has_text="Max new tokens").locator("input[type=number]").first
    tokens.fill(str(n))
    tokens.press("Tab")


def ask_chat(page, question: str, max_new_tokens: int, min_chars: int, timeout_ms: int) -> None:
    """Chat tab: cap the answer's length (a few words show the adapter answers; fast on 2 cores), send
    ``question`` and wait until both the base pane and the adapter pane have answered."""
    set_max_new_tokens(page, max_new_tokens)
    page.locator("#chat-input textarea").fill(question)
    page.locator("#chat-send").click()
    answered = """min => ['#chat-pane-0', '#chat-pane-1'].every(pane => {
        const bots = [...document.querySelectorAll(pane + ' .message.bot')];
        return bots.length > 0 && bots[bots.length - 1].innerText.trim().length > min;
    }) && document.querySelector('#chat-status').innerText.trim() === ''"""
    page.wait_for_function(answered, arg=min_chars, timeout=timeout_ms)
