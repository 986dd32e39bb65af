"""One job runner kept waiting with the training stack already imported.

A training or export job starts in a fresh interpreter (``python -m jobs.runner``), and importing
torch, transformers, peft, TRL and datasets is ~5 s of CPU before the job reads its first row: a
third of the wait from pressing Start to the first loss of a small run on a CPU
(bench/bench_first_step.py). The worker therefore keeps one runner started ahead of time
(``python -m jobs.runner --standby``): it imports that stack and waits on its stdin; the next
isolated job is handed to it (job id, outcome file, log file, environment) instead of starting a
new interpreter. Everything after the hand-over is the ordinary runner: same process group of its
own, same death-with-the-worker, same exit codes, same supervision by the worker.

The standby is started only while no isolated job runs (its imports would take CPU from a run's
first steps), from the worker's main thread (Linux ties the parent-death signal to the thread that
started the child), and is used only by a job that needs exactly the environment it was started
with (``CUDA_VISIBLE_DEVICES``: CUDA reads it once, at the first CUDA call). ``FTS_WORKER_STANDBY=0``
turns it off; an idle standby holds the imported code (~0.5 GiB of RAM).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from jobs.runner import kill_group

log = logging.getLogger("jobs.standby")
ENV_SWITCH = "FTS_WORKER_STANDBY"
RETRY_AFTER_S = 60.0


def enabled_by_env() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class Standby:
    """The worker's side: start the waiting runner, hand it a job, or clean it up."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # the job-specific environment it was started with
        self.log_path: Path | None = None
        self.ready_path: Path | None = None  # written by the runner when its imports are done
        self.gave_up_at: float | None = None
        self.lock = threading.Lock()  # jobs take it from their own threads

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def warm(self) -> bool:
        """Alive and done importing: a job handed over now starts at once. (One that is still
        importing is left alone: a light job would wait for imports it does not need.)"""
        return self.alive() and self.ready_path is not None and self.ready_path.exists()

    def start(self, base_env: dict[str, str], job_env: dict[str, str], cwd: Path) -> None:
        """Start one unless one is waiting. Call from the worker's main thread only. A standby that
        died by itself (a broken install, out of memory) is not restarted for a minute."""
        with self.lock:
            self._start(base_env, job_env, cwd)

    def _start(self, base_env: dict[str, str], job_env: dict[str, str], cwd: Path) -> None:
        if self.alive():
            return
        if self.proc is not None:  # died without a job
            self.gave_up_at = time.monotonic()
            self._discard()
        if self.gave_up_at is not None and time.monotonic() - self.gave_up_at < RETRY_AFTER_S:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"standby-{uuid.uuid4().hex[:8]}.log"
        self.ready_path = self.log_path.with_suffix(".ready")
        with open(self.log_path, "ab") as logf:  # its import-time warnings, copied into the job's log
            self.proc = subprocess.Popen([sys.executable, "-m", "jobs.runner", "--standby", str(self.ready_path)],
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                         cwd=cwd, env={**base_env, **job_env}, start_new_session=True)
        self.env = dict(job_env)
        log.info("job runner on standby (pid %s)", self.proc.pid)

    def take(self, job_id: int, outcome_file: Path, log_path: Path, job_env: dict[str, str]) -> subprocess.Popen | None:
        """The standby process now running job ``job_id``, or None (none waiting, another
        environment, or it died): then the caller starts a fresh runner as before."""
        with self.lock:
            return self._take(job_id, outcome_file, log_path, job_env)

    def _take(self, job_id: int, outcome_file: Path, log_path: Path, job_env: dict[str, str]) -> subprocess.Popen | None:
        if not self.warm() or job_env != self.env:
            return None
        proc, self.proc = self.proc, None
        self.ready_path.unlink()
        order = {"job_id": job_id, "outcome_file": str(outcome_file), "log_path": str(log_path),
                 "standby_log": str(self.log_path)}
        self.log_path = self.ready_path = None  # the runner's now
        try:
            proc.stdin.write((json.dumps(order) + "\n").encode())
            proc.stdin.close()
        except OSError:  # it died between warm() and now
            kill_group(proc)
            return None
        return proc

    def discard(self) -> None:
        """Stop a waiting runner (worker shutdown, or before starting another)."""
        with self.lock:
            self._discard()

    def _discard(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None
        for path in (self.log_path, self.ready_path):
            if path is not None:
                path.unlink(missing_ok=True)


# -- the runner's side --------------------------------------------------------------------------
def warm_up(ready_file: str) -> None:
    """Import what a training or export job imports first (lazily loaded submodules included), then
    say so in ``ready_file``."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from transformers import Trainer  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import studio.training.recipe  # noqa: F401

    Path(ready_file).touch()


def wait_for_job() -> dict | None:
    """Block until the worker hands over a job; None when it closed the pipe without one."""
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else None


def adopt_job_output(order: dict) -> None:
    """From here on stdout/stderr are the job's log file, which starts with the standby's own output
    (import warnings) so the log reads as if the job had started the interpreter itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    standby_log = Path(order["standby_log"])
    fd = os.open(order["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if standby_log.exists():
            os.write(fd, standby_log.read_bytes())
            standby_log.unlink(missing_ok=True)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
