"""``python -m studio train spec.yaml [--inline | --no-follow] [--check] [--compare lora,vera,ia3]``: headless training.

Without ``--inline`` the run is queued for the worker (``python -m jobs.worker``) and followed until
it ends; with ``--inline`` it trains in this process (no worker needed). A relative ``data.path``
in the YAML is relative to the YAML file. Exit codes: 0 succeeded (or queued with --no-follow),
1 failed, 2 the spec was refused, 3 cancelled. ``--compare`` trains the spec once per method (a comparison
group, as the Train tab's "compare methods"), then prints the methods' figures side by side.
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
    p.add_argument("--compare", metavar="METHODS", help="train the spec once per method (comma separated, e.g. "
                   "lora,vera,ia3: each method's default preset and learning rate) and compare them")
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
    if args.compare:
        return run_comparison(db, args)
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


def run_comparison(db, args: argparse.Namespace) -> int:
    """``--compare``: one run per method, refused methods with their reasons, the figures at the end."""
    from studio import method_compare
    from studio.spec import SpecError
    from studio.training.service import check_spec

    spec, problems = check_spec(db, load_spec_data(args.spec))
    methods = [m.strip() for m in args.compare.split(",") if m.strip()]
    plan = method_compare.plan_comparison(db, spec, methods) if spec is not None else None
    problems = problems if spec is None else method_compare.refusal_problems(plan)
    if problems:
        return refused(args.spec, problems)
    for name, reasons in plan.refused.items():
        print(f"{name} not included: " + "; ".join(str(p) for p in reasons), file=sys.stderr)
    if args.check:
        print(f"{args.spec}: ok for {', '.join(plan.methods)}")
        return EXIT_OK
    try:
        plan = method_compare.start_comparison(db, spec, plan.methods)
    except SpecError as e:
        return refused(args.spec, e.problems)
    print(f"comparison {plan.group}: " + ", ".join(f"run {i} {m}" for i, m in zip(plan.run_ids, plan.methods)))
    if args.no_follow:
        return EXIT_OK
    codes = [train_or_follow(db, run_id, args.inline) for run_id in plan.run_ids]
    print_figures(method_compare.results(db, plan.run_ids))
    return max(codes)


def refused(path: Path, problems: list) -> int:
    print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    return EXIT_SPEC


def train_or_follow(db, run_id: int, inline: bool) -> int:
    from studio.training.service import get_run

    if inline:
        from jobs.worker import run_inline

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        run_inline(db, get_run(db, run_id).job_id)
    else:
        follow(db, run_id)
    return report(db, run_id)


def print_figures(results: list) -> None:
    """The comparison as a table: method, trainable parameters, tokens/s, peak memory, final loss."""
    print(f"{'run':>5}  {'method':<14}{'status':<11}{'trainable':>12}{'tokens/s':>10}{'peak GiB':>10}{'final loss':>12}")
    for r in results:
        print(f"{r.run_id:>5}  {r.method:<14}{r.status:<11}{r.trainable if r.trainable is not None else '?':>12}"
              f"{f'{r.tokens_per_s:.0f}' if r.tokens_per_s else '-':>10}"
              f"{f'{r.peak_bytes / 2**30:.2f}' if r.peak_bytes else '-':>10}"
              f"{f'{r.final_loss:.4f}' if r.final_loss is not None else '-':>12}")
