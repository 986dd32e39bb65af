"""The worker: ``python -m jobs.worker`` claims jobs from the database and runs them.

One worker owns the GPU(s) of its machine. Several workers may share one database; the claim in
``jobs.queue`` guarantees each job runs once. Isolated jobs (training, export) run in a child
process in its own process group; the worker renews the job's lease, relays cancellation and kills
the whole group if the job does not stop within ``cancel_grace_s``.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs import logsetup, queue
from jobs.context import JobCancelled, JobContext
from jobs.kinds import KINDS, JobKind, get_kind
from jobs.runner import EXIT_CANCELLED, EXIT_OK, WORKER_PID_ENV
from jobs.services import WorkerServices
from storage.db import Database
from storage.models import Job, JobStatus

log = logging.getLogger("jobs.worker")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    status: str
    error: str | None = None
    exit_code: int | None = None
    exit_signal: str | None = None
    result: dict[str, Any] | None = None


@dataclass
class WorkerConfig:
    lease_s: float = queue.DEFAULT_LEASE_S
    heartbeat_s: float = 5.0
    poll_s: float = 0.5
    reap_every_s: float = 5.0
    cancel_grace_s: float = 5.0
    kinds: list[str] | None = None  # None: every kind


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Worker:
    db: Database
    config: WorkerConfig = field(default_factory=WorkerConfig)
    worker_id: str = field(default_factory=new_worker_id)
    stop_event: threading.Event = field(default_factory=threading.Event)
    services: WorkerServices = field(default_factory=WorkerServices)  # the chat engine lives here
    _last_reap: float = 0.0

    # -- main loop ---------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker %s started on %s", self.worker_id, self.db.settings.db_url)
        while not self.stop_event.is_set():
            if not self.run_once():
                self.stop_event.wait(self.config.poll_s)
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Reap if due, then claim and run one job. Returns whether a job ran."""
        if time.monotonic() - self._last_reap >= self.config.reap_every_s:
            self._last_reap = time.monotonic()
            reap(self.db)
        job = queue.claim(self.db, self.worker_id, self.config.kinds, self.config.lease_s)
        if job is None:
            return False
        self.execute(job)
        return True

    def execute(self, job: Job) -> Outcome:
        log.info("job %s (%s) started, attempt %s", job.id, job.kind, job.attempts)
        try:
            kind = get_kind(job.kind)
            outcome = self._run_isolated(job, kind) if kind.isolated else self._run_in_process(job, kind)
        except Exception as e:  # the worker must survive anything a job does
            log.exception("job %s crashed the worker's runner", job.id)
            kind, outcome = None, Outcome(JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
        if queue.finish(self.db, job.id, self.worker_id, outcome.status, error=outcome.error,
                        exit_code=outcome.exit_code, exit_signal=outcome.exit_signal, result=outcome.result):
            run_on_finish(self.db, job.id, kind)
        log.info("job %s ended %s%s", job.id, outcome.status, f": {outcome.error}" if outcome.error else "")
        return outcome

    # -- in-process jobs -----------------------------------------------------------------------
    def _run_in_process(self, job: Job, kind: JobKind) -> Outcome:
        ctx = JobContext(self.db, job.id, job.kind, dict(job.payload or {}), services=self.services)
        beat = _Heartbeat(self, job.id)
        beat.start()
        try:
            return Outcome(JobStatus.SUCCEEDED, result=kind.load_handler()(ctx))
        except JobCancelled as e:
            return Outcome(JobStatus.CANCELLED, error=str(e))
        except Exception as e:
            log.exception("job %s failed", job.id)
            return Outcome(JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
        finally:
            beat.stop()

    # -- isolated jobs -------------------------------------------------------------------------
    def _run_isolated(self, job: Job, kind: JobKind) -> Outcome:
        self.services.release()  # the child process gets the memory the chat model held
        log_path = self.db.workspace.job_log(job.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        outcome_file = log_path.with_suffix(".outcome.json")
        outcome_file.unlink(missing_ok=True)
        env = {**os.environ, "FTS_WORKSPACE": str(self.db.settings.workspace), "FTS_DB_URL": self.db.settings.db_url,
               "PYTHONUNBUFFERED": "1", WORKER_PID_ENV: str(os.getpid())}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "jobs.runner", str(job.id), str(outcome_file)],
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=PROJECT_ROOT, env=env, start_new_session=True)
        queue.set_pid(self.db, job.id, proc.pid, str(log_path))
        killed_because = self._supervise(job.id, proc)
        return _outcome_of(proc.returncode, outcome_file, killed_because)

    def _supervise(self, job_id: int, proc: subprocess.Popen) -> str | None:
        """Wait for the child; renew the lease; enforce cancel and shutdown. Returns why we killed it."""
        last_beat = time.monotonic()
        cancel_seen_at: float | None = None
        while proc.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            if now - last_beat >= self.config.heartbeat_s:
                last_beat = now
                if not queue.heartbeat(self.db, job_id, self.worker_id, self.config.lease_s):
                    _kill_group(proc)
                    return "the job was taken from this worker (its lease had expired)"
            if self.stop_event.is_set():
                _terminate_group(proc, self.config.cancel_grace_s)
                return "the worker was stopped while the job ran; resume it to continue"
            if cancel_seen_at is None and queue.cancel_requested(self.db, job_id):
                cancel_seen_at = now
            if cancel_seen_at is not None and now - cancel_seen_at > self.config.cancel_grace_s:
                _kill_group(proc)
                return "cancelled; the job did not stop by itself and was killed"
        # The leader exited: make sure nothing it started lives on in its group.
        _kill_group(proc)
        return None


class _Heartbeat(threading.Thread):
    def __init__(self, worker: Worker, job_id: int):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.worker, self.job_id, self._stop_evt = worker, job_id, threading.Event()

    def run(self) -> None:
        while not self._stop_evt.wait(self.worker.config.heartbeat_s):
            queue.heartbeat(self.worker.db, self.job_id, self.worker.worker_id, self.worker.config.lease_s)

    def stop(self) -> None:
        self._stop_evt.set()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _terminate_group(proc: subprocess.Popen, grace_s: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc)


def _outcome_of(returncode: int, outcome_file: Path, killed_because: str | None) -> Outcome:
    import json

    data: dict[str, Any] = {}
    if outcome_file.exists():
        try:
            data = json.loads(outcome_file.read_text(encoding="utf-8"))
        except ValueError:
            data = {}
        outcome_file.unlink(missing_ok=True)
    signame = signal.Signals(-returncode).name if returncode < 0 else None
    if killed_because and killed_because.startswith("cancelled"):
        return Outcome(JobStatus.CANCELLED, error=killed_because, exit_code=returncode, exit_signal=signame)
    if killed_because:
        return Outcome(JobStatus.FAILED, error=killed_because, exit_code=returncode, exit_signal=signame)
    if returncode == EXIT_OK:
        return Outcome(JobStatus.SUCCEEDED, exit_code=0, result=data.get("result"))
    if returncode == EXIT_CANCELLED:
        return Outcome(JobStatus.CANCELLED, error=data.get("error"), exit_code=returncode)
    error = data.get("error")
    if error is None and signame:
        error = f"the job process was killed by {signame}"
        if signame == "SIGKILL":
            error += " (often the kernel's out-of-memory killer: try a smaller batch or QLoRA)"
    return Outcome(JobStatus.FAILED, error=error or f"the job process exited with code {returncode}",
                   exit_code=returncode, exit_signal=signame)


def run_on_finish(db: Database, job_id: int, kind: JobKind | None) -> None:
    """Let the job's domain (run, export) record how it ended; never let this break the worker."""
    if kind is None or kind.on_finish is None:
        return
    try:
        kind.load_on_finish()(db, queue.get(db, job_id))
    except Exception:
        log.exception("on_finish of job %s failed", job_id)


def reap(db: Database, now=None) -> list[int]:
    """Fail or requeue jobs whose worker died; each kind's hooks record what that means for its
    domain (a requeued training run shows the attempt that ended; a failed one says why)."""
    expire_dead_local_workers(db)
    reaped = queue.reap_expired(db, now, retry_policy=lambda job: _kind_retry_policy(db, job))
    for job_id in reaped:
        job = queue.get(db, job_id)
        log.warning("reaped job %s (%s): now %s", job_id, job.kind, job.status)
        kind = KINDS.get(job.kind)
        if job.status in JobStatus.FINISHED:
            run_on_finish(db, job_id, kind)
        elif kind is not None and kind.on_requeue:
            try:
                kind.load("on_requeue")(db, job)
            except Exception:
                log.exception("on_requeue of job %s failed", job_id)
    return reaped


def _kind_retry_policy(db: Database, job: Job) -> tuple[bool, str | None] | None:
    kind = KINDS.get(job.kind)
    if kind is None or not kind.retry_after_worker_lost:
        return None
    try:
        return kind.load("retry_after_worker_lost")(db, job)
    except Exception:
        log.exception("retry policy of job %s failed; the default applies", job.id)
        return None


def expire_dead_local_workers(db: Database) -> list[int]:
    """Jobs held by a worker of this machine whose process is gone need not wait for their lease
    to run out: a restarted worker takes them back at once (a power cut costs seconds, not a lease)."""
    host = socket.gethostname()
    expired = []
    for job in queue.running_jobs(db):
        parts = (job.worker_id or "").split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _process_alive(int(parts[1])):
            if queue.expire_lease(db, job.id, job.worker_id):
                expired.append(job.id)
    return expired


def _process_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_inline(db: Database, job_id: int, services: WorkerServices | None = None) -> Outcome:
    """Synchronous mode (tests, headless CLI): run one queued job in this process, no child.
    ``services``: the caller's long-lived services (a chat engine kept across calls); without
    them the job gets fresh ones, released when it ends."""
    own = services is None
    worker = Worker(db, worker_id=f"inline:{os.getpid()}", services=services or WorkerServices())
    try:
        return _run_inline(worker, job_id)
    finally:
        if own:
            worker.services.close()


def _run_inline(worker: Worker, job_id: int) -> Outcome:
    db = worker.db
    job = queue.claim_job(db, job_id, worker.worker_id)
    if job is None:
        raise RuntimeError(f"job {job_id} is not queued")
    kind = get_kind(job.kind)
    outcome = worker._run_in_process(job, kind)
    if queue.finish(db, job_id, worker.worker_id, outcome.status, error=outcome.error, result=outcome.result):
        run_on_finish(db, job_id, kind)
    return outcome


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__.splitlines()[0])
    p.add_argument("--workspace", help="workspace folder (default: $FTS_WORKSPACE or ./workspace)")
    p.add_argument("--db-url", help="SQLAlchemy URL (default: SQLite in the workspace)")
    p.add_argument("--lease", type=float, default=queue.DEFAULT_LEASE_S, help="job lease in seconds")
    p.add_argument("--heartbeat", type=float, default=5.0, help="lease renewal interval in seconds")
    p.add_argument("--cancel-grace", type=float, default=5.0, help="seconds a cancelled job gets before a kill")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between looks at an empty queue")
    p.add_argument("--kinds", help="comma-separated job kinds this worker takes (default: all)")
    args = p.parse_args(argv)
    logsetup.configure("worker")
    db = Database.open(args.workspace, args.db_url)
    db.settings.export_to_env()
    config = WorkerConfig(lease_s=args.lease, heartbeat_s=args.heartbeat, cancel_grace_s=args.cancel_grace, poll_s=args.poll,
                          kinds=args.kinds.split(",") if args.kinds else None)
    worker = Worker(db, config)

    def _stop(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run_forever()


if __name__ == "__main__":
    main()
