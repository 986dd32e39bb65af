"""From pressing Start to the first loss, as a user waits for it: through a real worker process.

    .venv/bin/python bench/bench_first_step.py                   # 3 runs with a job-runner standby, 3 without, interleaved
    .venv/bin/python bench/bench_first_step.py --repeats 5 --modes standby

A fresh workspace, the first ``--rows`` rows of ../shared/data/alpaca_en_demo.json imported as the
Datasets tab imports them, and one ``python -m jobs.worker`` (as ``launch.py`` starts it) per mode;
then, for each repeat, a run with the Train tab's defaults for the built-in SmolLM2 (``start_run``,
what the Start button calls) and the clock runs until the run's first training metric (optimizer
step 1) is in the database. Prints, per mode, every repeat's seconds, the median, and the timeline
of the last run (job claimed, child started, stages, step 1) read from the job's progress messages.

Modes: ``standby`` keeps one job runner waiting with the training stack already imported (the
worker's default); ``fresh`` starts a new interpreter per job (``FTS_WORKER_STANDBY=0``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from chaos_worker import write_rows


class Timeline(threading.Thread):
    """Polls the job's progress message and the run's metrics; records when each first appears."""

    def __init__(self, db, run_id: int, t0: float):
        super().__init__(daemon=True)
        self.db, self.run_id, self.t0 = db, run_id, t0
        self.events: list[tuple[float, str]] = []
        self.first_step_s: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from studio.training.service import get_run, run_metrics

        seen = None
        while not self.stop.is_set() and self.first_step_s is None:
            now = time.monotonic() - self.t0
            run = get_run(self.db, self.run_id)
            message = self._job_message(run)
            if message and message != seen:
                seen = message
                self.events.append((now, message))
            if any(m.step == 1 and m.loss is not None for m in run_metrics(self.db, self.run_id, "train")):
                self.first_step_s = now
                self.events.append((now, "step 1 in the database"))
            time.sleep(0.05)

    def _job_message(self, run) -> str | None:
        from storage.models import Job

        if not run.job_id:
            return None
        with self.db.session() as s:
            job = s.get(Job, run.job_id)
            return f"job {job.status}: {(job.progress or {}).get('message') or ''}"[:110] if job else None


def start_worker(settings, standby: bool) -> subprocess.Popen:
    env = {**os.environ, "FTS_WORKSPACE": str(settings.workspace), "FTS_DB_URL": settings.db_url,
           "FTS_WORKER_STANDBY": "1" if standby else "0"}
    return subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def one_run(db, dataset_id: int, seed: int, timeout: float) -> Timeline:
    from studio.models import SMOLLM2
    from studio.spec import RunSpec
    from studio.training.service import cancel_run, start_run

    spec = RunSpec(model=SMOLLM2, data={"dataset_id": dataset_id}, train={"seed": seed})  # the spec's defaults
    t0 = time.monotonic()
    run_id = start_run(db, spec)
    timeline = Timeline(db, run_id, t0)
    timeline.start()
    timeline.join(timeout)
    timeline.stop.set()
    cancel_run(db, run_id)  # the first loss is all we came for
    return timeline


def wait_idle(db, timeout: float = 120) -> None:
    """Until no job is queued or running (the cancelled run has stopped, the worker is free)."""
    from storage.models import Job, JobStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session() as s:
            busy = s.query(Job).filter(Job.status.notin_(list(JobStatus.FINISHED))).count()
        if not busy:
            return
        time.sleep(0.2)
    raise TimeoutError("jobs still running")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["standby", "fresh"], choices=["standby", "fresh"])
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--settle", type=float, default=20.0,
                   help="seconds to wait after a worker starts (a user does not press Start the same second)")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()
    print(describe())

    from storage.db import Database
    from studio.datasets.service import import_dataset

    results: dict[str, list[float]] = {m: [] for m in args.modes}
    timelines: dict[str, Timeline] = {}
    with tempfile.TemporaryDirectory(prefix="bench-first-step-") as tmp:
        workspaces = {}
        for mode in args.modes:
            db = Database.open(Path(tmp) / mode)
            dataset = import_dataset(db, write_rows(db.workspace.root, args.rows)).dataset
            workspaces[mode] = (db, dataset.id)
        for i in range(args.repeats):  # interleaved: standby, fresh, standby, fresh ...
            for mode in args.modes:
                db, dataset_id = workspaces[mode]
                worker = start_worker(db.settings, mode == "standby")
                try:
                    time.sleep(args.settle)
                    timeline = one_run(db, dataset_id, seed=i, timeout=args.timeout)
                    wait_idle(db)
                finally:
                    worker.terminate()
                    worker.wait(60)
                seconds = timeline.first_step_s
                results[mode].append(seconds if seconds is not None else float("nan"))
                timelines[mode] = timeline
                print(f"  {mode:8s} repeat {i + 1}: {seconds if seconds is not None else float('nan'):6.1f} s to step 1"
                      f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    print("\nseconds from Start to the first loss (median of repeats):")
    for mode in args.modes:
        print(f"  {mode:8s} median {statistics.median(results[mode]):6.1f} s   runs {results[mode]}")
    for mode in args.modes:
        print(f"\ntimeline of the last {mode} run:")
        for at, message in timelines[mode].events:
            print(f"  {at:6.1f} s  {message}")


if __name__ == "__main__":
    main()
