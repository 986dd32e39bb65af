"""``python -m studio train spec.yaml [--inline | --no-follow] [--check]``: headless training.

Without ``--inline`` the run is queued for the worker (``python -m jobs.worker``) and followed until
it ends; with ``--inline`` it trains in this process (no worker needed). A relative ``data.path``
in the YAML is relative to the YAML file. Exit codes: 0 succeeded (or queued with --no-follow),
1 failed, 2 the spec was refused, 3 cancelled.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_SPEC, EXIT_CANCELLED = 0, 1, 2, 3


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an adapter from a run spec (YAML)",
                              description=__doc__.splitlines()[0])
    p.add_argument("spec", type=Path, help="run spec YAML (the spec.yaml of an earlier run works too)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--inline", action="store_true", help="train in this process instead of a worker")
    mode.add_argument("--no-follow", action="store_true", help="queue the run and return at once")
    p.add_argument("--check", action="store_true", help="only validate the spec and print its problems")
    p.set_defaults(func=run)


def load_spec_data(path: Path) -> dict:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = (data.get("data") or {}).get("path")
    if rows and not Path(rows).expanduser().is_absolute():
        data["data"]["path"] = str((path.parent / rows).resolve())
    return data


def run(args: argparse.Namespace) -> int:
    from storage.db import Database
    from studio.training.service import check_spec, get_run, start_run

    db = Database.open()
    # the user's own rights: files may be anywhere. Training here (--inline, --check): this machine's
    # pre-flight too; queued: the worker's pre-flight judges its own device and the run row says so
    spec, problems = check_spec(db, load_spec_data(args.spec), preflight=args.inline or args.check)
    if problems:
        print(f"{args.spec}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return EXIT_SPEC
    if args.check:
        print(f"{args.spec}: ok")
        return EXIT_OK
    run_id = start_run(db, spec)
    print(f"run {run_id} queued: {spec.display_name()}")
    if args.no_follow:
        return EXIT_OK
    if args.inline:
        from jobs.worker import run_inline

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # no-op if already set up
        run_inline(db, get_run(db, run_id).job_id)
    else:
        follow(db, run_id)
    return report(db, run_id)


def follow(db, run_id: int, poll_s: float = 2.0, hint_after_s: float = 30.0) -> None:
    """Print each new progress message until the run ends."""
    from studio.training.service import get_run, run_progress

    started, last, hinted = time.monotonic(), None, False
    while get_run(db, run_id).status in ("queued", "running"):
        message = run_progress(db, run_id).get("message")
        if message and message != last:
            print(message, flush=True)
            last = message
        if not hinted and get_run(db, run_id).status == "queued" and time.monotonic() - started > hint_after_s:
            print("still queued: is a worker running? start one with `python -m jobs.worker`, or use --inline",
                  flush=True)
            hinted = True
        time.sleep(poll_s)


def report(db, run_id: int) -> int:
    from studio.training.service import get_run, run_adapters

    run = get_run(db, run_id)
    if run.problems:
        print(f"run {run_id} refused by the worker's pre-flight, {len(run.problems)} problem(s):")
        for p in run.problems:
            print(f"  - {p['field']}: {p['message']}" + (f" ({p['hint']})" if p.get("hint") else ""))
    else:
        print(f"run {run_id} {run.status}" + (f": {run.error}" if run.error else ""))
    if run.final_loss is not None:
        print(f"final loss {run.final_loss:.4f}" + (f", eval loss {run.final_eval_loss:.4f}"
                                                     if run.final_eval_loss is not None else ""))
    for adapter in run_adapters(db, run_id):
        print(f"adapter: {db.workspace.root / adapter.path}")
    return {"succeeded": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(run.status, EXIT_FAILED)
