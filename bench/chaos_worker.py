"""Chaos bench: SIGKILL the worker's whole process group at random points of a real SmolLM2 run.

    .venv/bin/python bench/chaos_worker.py                 # 20 kills (the issue's N), 120 steps
    .venv/bin/python bench/chaos_worker.py --kills 4 --steps 40 --seed 1

A supervisor like ``launch.py``'s restarts ``python -m jobs.worker`` after each kill; nothing else
helps the run along. After the kills the run must finish by itself, and then:
- it made exactly ``--steps`` optimizer steps, as an undisturbed run does (``--reference`` trains
  one and compares the step count and the final loss);
- its training metrics hold every step once (no step counted twice after the checkpoint an
  attempt resumed from) and each attempt resumed from the checkpoint the previous one ended with;
- it has one adapter; ``PRAGMA integrity_check`` says ok.
Prints kills, resumes, idle kills (before a new checkpoint), and the seconds lost per kill: from
the kill until a later attempt has logged a step past the one the run had reached (restart,
reload, retrained steps, and that one step). With ``--reference``, also the extra wall time
against the undisturbed run, per kill (which also counts the killed attempts' own start-up).

Kill points are uniform in ``[--kill-min, --kill-max]`` seconds after a worker starts, except that
after two kills in a row without a new complete checkpoint the bench waits for one: the studio
stops retrying after three such kills in a row (``FTS_MAX_IDLE_ATTEMPTS``), by design.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"


def write_rows(folder: Path, n: int = 64) -> Path:
    if ALPACA.exists():
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))[:n]
    else:
        from tests.sample_data import alpaca_rows

        rows = alpaca_rows()[:n]
    path = folder / "train.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            prompt = r["instruction"] + (f"\n{r['input']}" if r.get("input") else "")
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": [{"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": r["output"]}]}]}) + "\n")
    return path


def spec_for(data: Path, steps: int, save_steps: int) -> dict:
    from studio.models import SMOLLM2

    return {"model": SMOLLM2, "data": {"path": str(data)}, "method": "lora",
            "train": dict(max_steps=steps, batch_size=2, grad_accum=1, cutoff_len=128, learning_rate=1e-3,
                          gradient_checkpointing=False, logging_steps=1, save_steps=save_steps, warmup_ratio=0.0,
                          lr_scheduler="constant", precision="fp32", seed=0)}


class Supervised:
    """``python -m jobs.worker`` in a process group of its own, restarted after each kill."""

    def __init__(self, settings, env: dict[str, str]):
        self.settings, self.env, self.proc = settings, env, None

    def start(self) -> float:
        env = {**os.environ, **self.env, "FTS_WORKSPACE": str(self.settings.workspace),
               "FTS_DB_URL": self.settings.db_url}
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs.worker", "--poll", "0.2", "--heartbeat", "1",
                                      "--lease", "10"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return time.monotonic()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def last_step(db, run_id: int) -> int:
    from studio.training.service import run_metrics

    steps = [m.step for m in run_metrics(db, run_id, "train") if m.step is not None and m.loss is not None]
    return max(steps) if steps else 0


def wait_until(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout:.0f} s")


def chaos(db, settings, run_id: int, args, env: dict[str, str]) -> list[dict]:
    from storage.models import JobStatus
    from studio.training.attempts import checkpoint_step
    from studio.training.service import get_run

    rng = random.Random(args.seed)
    worker = Supervised(settings, env)
    kills: list[dict] = []
    watch = RegainWatch(db, run_id, kills)
    watch.start()
    idle_in_a_row = 0
    try:
        while len(kills) < args.kills:
            started = worker.start()
            step_before = checkpoint_step(db, run_id)
            if idle_in_a_row >= 2:  # a third idle kill would end the run (by design): let it save one
                wait_until(lambda before=step_before: checkpoint_step(db, run_id) > before
                           or get_run(db, run_id).status in JobStatus.FINISHED, timeout=args.timeout)
            else:
                delay = rng.uniform(args.kill_min, args.kill_max)
                while time.monotonic() - started < delay and get_run(db, run_id).status not in JobStatus.FINISHED:
                    time.sleep(0.05)
            if get_run(db, run_id).status in JobStatus.FINISHED:
                break
            reached = last_step(db, run_id)
            worker.kill()
            killed_at = time.monotonic()
            saved = checkpoint_step(db, run_id)
            idle_in_a_row = idle_in_a_row + 1 if saved <= step_before else 0
            kills.append({"after_s": round(killed_at - started, 1), "reached_step": reached, "checkpoint": saved,
                          "idle": saved <= step_before, "killed_at": killed_at,
                          "attempts": len(get_run(db, run_id).attempts or [])})
            print(f"kill {len(kills):2d}: {killed_at - started:5.1f} s after the worker started, "
                  f"step {reached} reached, checkpoint {saved}{' (no new checkpoint)' if saved <= step_before else ''}",
                  flush=True)
        worker.start()
        wait_until(lambda: get_run(db, run_id).status in JobStatus.FINISHED, timeout=args.timeout)
        time.sleep(0.5)  # the watcher's last look
    finally:
        watch.stop.set()
        worker.stop()
    for k in kills:  # None: killed again before it got back there
        k["lost_s"] = round(k["regained_at"] - k["killed_at"], 1) if k.get("regained_at") else None
    return kills


class RegainWatch(threading.Thread):
    """Marks, for each kill, when a later attempt logged a step past the one the run had reached
    (the new attempt deletes the metrics after its checkpoint first, so an old row never counts)."""

    def __init__(self, db, run_id: int, kills: list[dict]):
        super().__init__(daemon=True)
        self.db, self.run_id, self.kills, self.stop = db, run_id, kills, threading.Event()

    def run(self) -> None:
        from studio.training.service import get_run

        while not self.stop.wait(0.2):
            pending = [k for k in self.kills if k.get("regained_at") is None]
            if not pending:
                continue
            attempts, step, now = len(get_run(self.db, self.run_id).attempts or []), last_step(self.db, self.run_id), \
                time.monotonic()
            for k in pending:
                if attempts > k["attempts"] and step > k["reached_step"]:
                    k["regained_at"] = now


def check(db, run_id: int, steps: int) -> dict:
    from sqlalchemy import text

    from jobs import queue
    from studio.training.service import get_run, run_adapters, run_metrics

    run = get_run(db, run_id)
    job = queue.get(db, run.job_id)
    logged = [m.step for m in run_metrics(db, run_id, "train") if m.loss is not None]
    with db.engine.connect() as c:
        integrity = c.execute(text("PRAGMA integrity_check")).scalar()
    attempts = run.attempts or []
    chained = all(b["from_step"] == a["to_step"] for a, b in itertools.pairwise(attempts))
    return {"status": run.status, "error": run.error, "optimizer_steps": (job.result or {}).get("steps"),
            "expected_steps": steps, "metrics_steps_once_each": logged == list(range(1, steps + 1)),
            "adapters": len(run_adapters(db, run_id)), "integrity_check": integrity,
            "attempts": len(attempts), "attempts_chained": chained, "final_loss": run.final_loss}


def reference_run(folder: Path, spec: dict) -> dict:
    """The same spec trained once, undisturbed, through a worker process (as the chaos run is)."""
    from jobs import queue
    from storage.db import Database
    from storage.settings import Settings
    from studio.training.service import get_run, start_run

    settings = Settings.resolve(folder / "reference-workspace")
    db = Database(settings)
    run_id = start_run(db, spec)
    worker = Supervised(settings, {"FTS_TORCH_THREADS": os.environ.get("FTS_TORCH_THREADS", "1")})
    t0 = worker.start()
    try:
        wait_until(lambda: get_run(db, run_id).status in ("succeeded", "failed", "cancelled"), timeout=3600)
    finally:
        worker.stop()
    run, job = get_run(db, run_id), queue.get(db, get_run(db, run_id).job_id)
    figures = {"status": run.status, "optimizer_steps": (job.result or {}).get("steps"), "final_loss": run.final_loss,
               "wall_s": round(time.monotonic() - t0, 1)}
    db.dispose()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="how many times to kill the worker (default 20)")
    p.add_argument("--steps", type=int, default=120, help="optimizer steps of the run")
    p.add_argument("--save-steps", type=int, default=5, help="checkpoint every this many steps")
    p.add_argument("--kill-min", type=float, default=2.0, help="earliest kill, seconds after a worker starts")
    p.add_argument("--kill-max", type=float, default=40.0, help="latest kill, seconds after a worker starts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training process")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the run to finish")
    p.add_argument("--reference", action="store_true", help="also train an undisturbed run and compare")
    p.add_argument("--workdir", help="keep the workspace here (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    print(describe(), flush=True)

    from storage.db import Database
    from storage.settings import Settings
    from studio.training.service import get_run, start_run

    env = {"FTS_TORCH_THREADS": str(args.threads)}
    os.environ.update(env)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        settings = Settings.resolve(folder / "workspace")
        db = Database(settings)
        spec = spec_for(write_rows(folder), args.steps, args.save_steps)
        run_id = start_run(db, spec)
        t0 = time.monotonic()
        kills = chaos(db, settings, run_id, args, env)
        total_s = time.monotonic() - t0
        result = check(db, run_id, args.steps)
        attempts = get_run(db, run_id).attempts or []
        lost = [k["lost_s"] for k in kills if k.get("lost_s") is not None]
        figures = {"kills": len(kills), "idle_kills": sum(k["idle"] for k in kills),
                   "resumes": sum(a.get("trigger") == "requeued" for a in attempts),
                   "seconds_lost_per_kill": lost, "mean_seconds_lost": round(sum(lost) / len(lost), 1) if lost else None,
                   "wall_s": round(total_s, 1), **result}
        if args.reference:
            figures["reference"] = ref = reference_run(folder, spec)
            figures["extra_wall_s_per_kill"] = round((total_s - ref["wall_s"]) / len(kills), 1) if kills else None
        db.dispose()
    print(json.dumps(figures, indent=1))
    ok = (figures["status"] == "succeeded" and result["optimizer_steps"] == args.steps
          and result["metrics_steps_once_each"] and result["adapters"] == 1 and result["integrity_check"] == "ok"
          and result["attempts_chained"]
          and (not args.reference or figures["reference"]["optimizer_steps"] == result["optimizer_steps"]))
    print("OK" if ok else "FAILED")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
