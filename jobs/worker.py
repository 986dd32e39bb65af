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

from jobs import logsetup, oom, queue
from jobs.context import JobCancelled, JobContext
from jobs.devices import (
    DEFAULT_MARGIN,
    GPU,
    Budget,
    Demand,
    Device,
    cuda_visible_devices,
    detect_devices,
    devices_from_env,
    parse_devices,
)
from jobs.kinds import KINDS, JobKind, get_kind
from jobs.runner import EXIT_CANCELLED, EXIT_OK, WORKER_PID_ENV, kill_group
from jobs.services import WorkerServices
from jobs.standby import Standby
from jobs.standby import enabled_by_env as standby_enabled_by_env
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
    devices: list[Device] | None = None  # None: detected (each GPU, else the CPU's RAM)
    margin: float = DEFAULT_MARGIN  # of each device's memory kept free
    standby: bool = field(default_factory=standby_enabled_by_env)  # a job runner waiting, imports done


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Running:
    job_id: int
    kind: JobKind | None  # None: an unknown kind, about to fail with a message
    demand: Demand | None
    devices: list[int]
    thread: threading.Thread

    @property
    def group(self) -> str | None:
        return self.kind.exclusive if self.kind else None


@dataclass
class Worker:
    db: Database
    config: WorkerConfig = field(default_factory=WorkerConfig)
    worker_id: str = field(default_factory=new_worker_id)
    stop_event: threading.Event = field(default_factory=threading.Event)
    services: WorkerServices = field(default_factory=WorkerServices)  # the chat engine lives here
    _last_reap: float = -1e9
    _running: dict[int, _Running] = field(default_factory=dict)
    _demands: dict[int, tuple[str | None, Demand | None]] = field(default_factory=dict)  # (device asked, estimate)
    _told: dict[int, str] = field(default_factory=dict)  # the waiting reason last written, by job id
    _resident: tuple[str | None, int] = (None, 0)  # the chat model held between chats, and its bytes
    _standby: Standby | None = None  # jobs.standby: started by the main loop, taken by isolated jobs

    # -- main loop ---------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker %s started on %s with %s", self.worker_id, self.db.settings.db_url,
                 ", ".join(str(d) for d in self.devices))
        while not self.stop_event.is_set():
            if not self.schedule():
                self._keep_standby()
                self.stop_event.wait(self.config.poll_s)
        for running in list(self._running.values()):  # their supervisors stop their children
            running.thread.join()
        if self._standby is not None:
            self._standby.discard()
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Reap if due, then claim and run one job to its end, ignoring the memory budget (tests,
        one job at a time). Returns whether a job ran."""
        self._reap_if_due()
        job = queue.claim(self.db, self.worker_id, self.config.kinds, self.config.lease_s)
        if job is None:
            return False
        self.execute(job)
        return True

    @property
    def devices(self) -> list[Device]:
        if self.config.devices is None:
            self.config.devices = devices_from_env() or detect_devices()
        return self.config.devices

    def _reap_if_due(self) -> None:
        if time.monotonic() - self._last_reap >= self.config.reap_every_s:
            self._last_reap = time.monotonic()
            reap(self.db)

    def _keep_standby(self) -> None:
        """While no isolated job runs (its imports would slow a run's first steps), keep one job
        runner waiting with the training stack imported, for the device a run usually gets."""
        if not self.config.standby or any(r.kind is not None and r.kind.isolated for r in self._running.values()):
            return
        if self._standby is None:
            self._standby = Standby(self.db.workspace.logs_dir / "jobs")
        gpus = [d.index for d in self.devices if d.kind == GPU][:1]
        self._standby.start(self._child_env(), cuda_visible_devices(self.devices, gpus), PROJECT_ROOT)

    # -- scheduling ----------------------------------------------------------------------------
    def schedule(self) -> list[int]:
        """Start every queued job that fits beside the running ones, in queue order (priority, then
        first come first served: once a job must wait for memory, none of its priority or lower
        that needs memory overtakes it). A job that waits says why in its progress message.
        Returns the ids started."""
        self._reap_if_due()
        self._forget_finished()
        budget = self._budget()
        started: list[int] = []
        first_waiting: Job | None = None
        queued = queue.queued_jobs(self.db, self.config.kinds)
        self._forget_gone({j.id for j in queued} | set(self._running))
        for job in queued:
            kind = KINDS.get(job.kind)
            if kind is not None and kind.exclusive and self._group_running(kind.exclusive):
                self._tell(job, f"waiting for the {kind.exclusive} job in progress to finish")
                continue
            demand = self._demand(job, kind)
            placement: list[int] = []
            if demand is not None:
                if first_waiting is not None and job.priority <= first_waiting.priority:
                    self._tell(job, f"waiting: job {first_waiting.id} is first in line")
                    continue
                demand = self._beside_resident_chat(demand, kind, budget)
                placement = budget.place(demand)
                if placement is None and self._release_chat_for(kind, demand):
                    budget = self._budget()
                    placement = budget.place(demand)
                if placement is None:
                    self._tell(job, budget.why_not(demand), budget.blocking(demand))
                    first_waiting = job
                    continue
            claimed = queue.claim_job(self.db, job.id, self.worker_id, self.config.lease_s)
            if claimed is None:
                continue
            if demand is not None:
                budget.add(placement, demand.bytes, demand.label)
            self._start(claimed, kind, demand, placement)
            started.append(job.id)
        return started

    def _start(self, job: Job, kind: JobKind | None, demand: Demand | None, placement: list[int]) -> None:
        names = [d.name for d in self.devices if d.index in placement]
        queue.set_progress(self.db, job.id, waiting=None, memory=None, devices=names,
                           message=f"starting on {', '.join(names)}" if names else "starting")
        self._told.pop(job.id, None)
        env = cuda_visible_devices(self.devices, placement) if kind is not None and kind.isolated else {}
        thread = threading.Thread(target=self.execute, args=(job, env), daemon=True, name=f"job-{job.id}")
        self._running[job.id] = _Running(job.id, kind, demand, placement, thread)
        thread.start()

    def _group_running(self, group: str) -> bool:
        return any(r.group == group for r in self._running.values())

    def _forget_finished(self) -> None:
        for job_id in [i for i, r in self._running.items() if not r.thread.is_alive()]:
            del self._running[job_id]
            self._demands.pop(job_id, None)  # requeued (a memory fix): estimated again

    def _forget_gone(self, current: set[int]) -> None:
        """Drop what we noted about jobs that are neither queued nor running here any more."""
        for notes in (self._demands, self._told):
            for job_id in [i for i in notes if i not in current]:
                del notes[job_id]

    def _budget(self, with_idle_chat: bool = True) -> Budget:
        """Memory in use: each running job's measured peak once it has one, else its estimate; the
        chat model while it stays loaded between chats."""
        budget = Budget(self.devices, self.config.margin)
        for r in self._running.values():
            if r.demand is None:
                continue
            measured = self._measured(r)
            budget.add(r.devices, measured or r.demand.bytes, r.demand.label + (" measured" if measured else ""),
                       r.demand.ref)
        resident = self._resident_chat_bytes() if with_idle_chat else 0
        if resident:  # a running chat job's demand is what it needs beyond this
            budget.add([self.devices[0].index], resident, "chat model")
        return budget

    def _measured(self, running: _Running) -> int | None:
        if running.kind is None or not running.kind.measured:
            return None
        try:
            return running.kind.load("measured")(self.db, queue.get(self.db, running.job_id))
        except Exception:
            log.exception("measured peak of job %s unavailable", running.job_id)
            return None

    def _resident_chat_bytes(self) -> int:
        ref = self.services.chat_model_loaded
        if ref is None:
            return 0
        from studio.demands import (
            chat_model_bytes,  # only once a chat has run: torch is loaded anyway
        )

        return chat_model_bytes(ref, self.devices[0].kind) or 0

    def _beside_resident_chat(self, demand: Demand, kind: JobKind | None, budget: Budget) -> Demand:
        """A chat job's model replaces the engine's resident one, counted in the budget already."""
        if kind is None or kind.exclusive != "chat":
            return demand
        resident = self._resident_chat_bytes()
        return Demand(max(0, demand.bytes - resident), demand.count, demand.pin, demand.label)

    def _release_chat_for(self, kind: JobKind | None, demand: Demand) -> bool:
        """Free the idle chat model when that makes room for the job. True if it was freed."""
        if self._group_running("chat") or (kind is not None and kind.exclusive == "chat") \
                or self.services.chat_model_loaded is None:
            return False
        if self._budget(with_idle_chat=False).place(demand) is None:
            return False  # it would wait anyway: keep the chat model
        log.info("releasing the chat model: a queued job needs its memory")
        self.services.release()
        return True

    def _demand(self, job: Job, kind: JobKind | None) -> Demand | None:
        """The job's estimate, computed once -- and again when the job was moved to another device
        while it waited (``payload.device``, e.g. a chat sent to the CPU)."""
        device = (job.payload or {}).get("device")
        if job.id not in self._demands or self._demands[job.id][0] != device:
            demand = None
            if kind is not None and kind.demand:
                try:
                    demand = kind.load("demand")(self.db, job, self.devices[0].kind)
                except Exception:
                    log.exception("no memory estimate for job %s; it is not held back", job.id)
            self._demands[job.id] = (device, demand)
        return self._demands[job.id][1]

    def _tell(self, job: Job, reason: str, memory: dict | None = None) -> None:
        """Write why the job waits where the UI shows it (job progress), once per change;
        ``memory``: for a job waiting for memory, who holds it (``Budget.blocking``)."""
        if self._told.get(job.id) != reason:
            self._told[job.id] = reason
            queue.set_progress(self.db, job.id, message=reason, waiting=True, memory=memory)

    def execute(self, job: Job, env: dict[str, str] | None = None) -> Outcome:
        log.info("job %s (%s) started, attempt %s", job.id, job.kind, job.attempts)
        try:
            kind = get_kind(job.kind)
            outcome = self._run_isolated(job, kind, env) if kind.isolated else self._run_in_process(job, kind)
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
    def _run_isolated(self, job: Job, kind: JobKind, env: dict[str, str] | None = None) -> Outcome:
        log_path = self.db.workspace.job_log(job.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        outcome_file = log_path.with_suffix(".outcome.json")
        outcome_file.unlink(missing_ok=True)
        proc = self._standby.take(job.id, outcome_file, log_path, env or {}) if self._standby else None
        if proc is None:
            with open(log_path, "ab") as logf:
                proc = subprocess.Popen([sys.executable, "-m", "jobs.runner", str(job.id), str(outcome_file)],
                                        stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=PROJECT_ROOT, env={**self._child_env(), **(env or {})},
                                        start_new_session=True)
        queue.set_pid(self.db, job.id, proc.pid, str(log_path))
        killed_because = self._supervise(job.id, proc)
        return _outcome_of(proc.returncode, outcome_file, killed_because, queue.cancel_requested(self.db, job.id))

    def _child_env(self) -> dict[str, str]:
        """The environment of every job runner (a job's devices are added to it)."""
        env = {**os.environ, "FTS_WORKSPACE": str(self.db.settings.workspace), "FTS_DB_URL": self.db.settings.db_url,
               "PYTHONUNBUFFERED": "1", WORKER_PID_ENV: str(os.getpid())}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        return env

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
                    kill_group(proc)
                    return "the job was taken from this worker (its lease had expired)"
            if self.stop_event.is_set():
                _terminate_group(proc, self.config.cancel_grace_s)
                return "the worker was stopped while the job ran; resume it to continue"
            if cancel_seen_at is None and queue.cancel_requested(self.db, job_id):
                cancel_seen_at = now
            if cancel_seen_at is not None and now - cancel_seen_at > self.config.cancel_grace_s:
                kill_group(proc)
                return "cancelled; the job did not stop by itself and was killed"
        # The leader exited: make sure nothing it started lives on in its group.
        kill_group(proc)
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


def _terminate_group(proc: subprocess.Popen, grace_s: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        pass
    kill_group(proc)


def _outcome_of(returncode: int, outcome_file: Path, killed_because: str | None,
                cancel_requested: bool = False) -> Outcome:
    data = _read_outcome(outcome_file)
    signame = signal.Signals(-returncode).name if returncode < 0 else None
    if killed_because and killed_because.startswith("cancelled"):
        return Outcome(JobStatus.CANCELLED, error=killed_because, exit_code=returncode, exit_signal=signame)
    if killed_because:
        return Outcome(JobStatus.FAILED, error=killed_because, exit_code=returncode, exit_signal=signame)
    if returncode == EXIT_OK:
        return Outcome(JobStatus.SUCCEEDED, exit_code=0, result=data.get("result"))
    if returncode == EXIT_CANCELLED:
        return Outcome(JobStatus.CANCELLED, error=data.get("error"), exit_code=returncode)
    memory = data.get(oom.RESULT_KEY)
    if memory is None and signame == "SIGKILL" and not cancel_requested:  # not ours, not the user's
        memory = oom.killed_by_oom_killer()
    if memory is not None:
        return Outcome(JobStatus.FAILED, error=oom.error_text(memory), exit_code=returncode, exit_signal=signame,
                       result={oom.RESULT_KEY: memory})
    error = data.get("error")
    if error is None and signame:
        error = f"the job process was killed by {signame}"
    return Outcome(JobStatus.FAILED, error=error or f"the job process exited with code {returncode}",
                   exit_code=returncode, exit_signal=signame)


def _read_outcome(outcome_file: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = {}
    if outcome_file.exists():
        try:
            data = json.loads(outcome_file.read_text(encoding="utf-8"))
        except ValueError:
            data = {}
        outcome_file.unlink(missing_ok=True)
    return data


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
        dead = len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _process_alive(int(parts[1]))
        if dead and queue.expire_lease(db, job.id, job.worker_id):
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
    p.add_argument("--devices", type=parse_devices, default=None,
                   help="use these devices instead of the detected ones, e.g. gpu0:24GiB,gpu1:24GiB or cpu:16GiB "
                        "(also $FTS_WORKER_DEVICES)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="fraction of each device's memory kept free when jobs run side by side")
    args = p.parse_args(argv)
    logsetup.configure("worker")
    db = Database.open(args.workspace, args.db_url)
    db.settings.export_to_env()
    config = WorkerConfig(lease_s=args.lease, heartbeat_s=args.heartbeat, cancel_grace_s=args.cancel_grace, poll_s=args.poll,
                          kinds=args.kinds.split(",") if args.kinds else None, devices=args.devices,
                          margin=args.margin)
    worker = Worker(db, config)

    def _stop(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run_forever()


if __name__ == "__main__":
    main()
