"""Start Finetune Studio: the web UI on 127.0.0.1:7860 and one supervised worker.

    python launch.py [--host 127.0.0.1] [--port 7860] [--workspace DIR] [--db-url URL]
                     [--auth user:pass] [--no-worker]

Login: ``--auth user:pass`` or the FTS_AUTH environment variable (same form). The worker is
restarted if it dies; Ctrl-C stops both. ``--no-worker`` when workers run elsewhere (they share
the database URL and the workspace).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("launch")


class SupervisedWorker:
    """Runs ``python -m jobs.worker`` and restarts it (with back-off) whenever it exits."""

    def __init__(self, extra_args: list[str]):
        self.cmd = [sys.executable, "-m", "jobs.worker", *extra_args]
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="worker-supervisor")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
            log.warning("worker exited with code %s; restarting in %.0fs", code, backoff)
            self._stopping.wait(backoff)

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth / FTS_AUTH must look like user:password")
    return user, password


def follow_preparation(db, job_id: int) -> None:
    """Print the built-in model's preparation progress on the console (first start takes a while)."""
    from jobs import queue
    from storage.models import JobStatus

    last = None
    while True:
        job = queue.get(db, job_id)
        msg = (job.progress or {}).get("message")
        if msg and msg != last:
            frac = (job.progress or {}).get("fraction")
            print(f"[built-in model] {f'{100 * frac:3.0f}% ' if frac is not None else ''}{msg}", flush=True)
            last = msg
        if job.status in JobStatus.FINISHED:
            if job.status != JobStatus.SUCCEEDED:
                print(f"[built-in model] preparation {job.status}: {job.error}", flush=True)
            return
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Start Finetune Studio")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workspace", help="folder for the database and all files (default ./workspace)")
    p.add_argument("--db-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://... for shared deployments")
    p.add_argument("--auth", default=os.environ.get("FTS_AUTH"), help="require login: user:password")
    p.add_argument("--no-worker", action="store_true", help="do not start a worker (workers run elsewhere)")
    p.add_argument("--no-prepare", action="store_true", help="do not prepare the built-in model at start")
    args = p.parse_args(argv)
    from jobs import logsetup

    logsetup.configure("studio")

    from storage.db import Database
    from storage.settings import Settings

    settings = Settings.resolve(args.workspace, args.db_url)
    settings.export_to_env()  # the worker and its job processes inherit these
    db = Database(settings)
    db.workspace.clean_stale_tmp()
    print(f"Workspace: {settings.workspace}", flush=True)

    worker = None
    if not args.no_worker:
        worker = SupervisedWorker([])
        worker.start()
    if not args.no_prepare:
        from studio.startup import ensure_model_prepared

        job_id = ensure_model_prepared(db)
        threading.Thread(target=follow_preparation, args=(db, job_id), daemon=True).start()

    from ui.app import serve

    demo = serve(db, args.host, args.port, auth=parse_auth(args.auth))
    print(f"Finetune Studio is running at http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping...", flush=True)
        demo.close()
        if worker:
            worker.stop()
        db.dispose()


if __name__ == "__main__":
    main()
