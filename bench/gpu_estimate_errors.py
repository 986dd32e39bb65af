"""Estimator errors of a GPU check, then and now: calibrate without spending GPU time again.

    .venv/bin/python bench/gpu_estimate_errors.py bench/results/gpu_check-cuda-<time>.json

For every training run of the check: the peak PyTorch reserved on the GPU, the estimate recorded
when it ran, and the estimate the estimator in this checkout gives for the same spec and model
config (both stored in the JSON) -- so a change to ``studio/estimate`` shows its errors before and
after. Errors are the allocator's share of the estimate against ``max_memory_reserved`` (neither
sees the CUDA context), + = over-estimate. No torch import.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def estimate_now(figures: dict[str, Any], config: dict[str, Any], images: int) -> int:
    """The allocator share of what this checkout's estimator says for the run's spec."""
    from studio import estimate as est
    from studio.planning import estimate_request
    from studio.spec import RunSpec

    spec = RunSpec.model_validate(figures["spec"])
    precision = spec.train.precision
    return int(est.estimate(estimate_request(spec, config, images, precision)).allocator_bytes)


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    parts = {p["name"]: p for p in report["parts"]}
    configs = {kind: (parts.get(f"model.{kind}", {}).get("figures") or {}).get("config") for kind in ("text", "vl")}
    out = []
    for name, part in parts.items():
        if not name.startswith("train.") or part["status"] != "ok":
            continue
        figures = part["figures"]
        vision = ".vl-" in name
        config = configs["vl" if vision else "text"]
        measured = figures["memory"]["max_memory_reserved_bytes"]
        then = figures["estimate"].get("allocator_bytes")
        now = estimate_now(figures, config, 1 if vision else 0) if config else None
        out.append({"part": name, "measured": measured, "then": then, "now": now,
                    "error_then": _error(then, measured), "error_now": _error(now, measured)})
    return out


def _error(estimate: int | None, measured: int) -> float | None:
    return None if not estimate or not measured else (estimate / measured - 1) * 100


def _gib(n: int | None) -> str:
    return f"{n / 2**30:8.2f}" if n else "       ?"


def _pct(e: float | None) -> str:
    return f"{e:+7.1f}%" if e is not None else "       ?"


def table(found: list[dict[str, Any]]) -> str:
    gib, pct = _gib, _pct
    lines = [f"{'part':28} {'reserved':>8} {'est then':>8} {'error':>8} {'est now':>8} {'error':>8}   (GiB)"]
    for r in found:
        lines.append(f"{r['part']:28} {gib(r['measured'])} {gib(r['then'])} {pct(r['error_then'])} "
                     f"{gib(r['now'])} {pct(r['error_now'])}")
    for key in ("error_then", "error_now"):
        errors = [abs(r[key]) for r in found if r[key] is not None]
        if errors:
            lines.append(f"mean |{key.replace('_', ' ')}| {statistics.mean(errors):.1f}%  max {max(errors):.1f}%  "
                         f"({len(errors)} runs)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a JSON written by bench/gpu_check.py on a GPU")
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    if report["meta"]["device"] != "cuda":
        print(f"{args.report} was measured on {report['meta']['device']}: the estimator's GPU figures compare only "
              "with a run on CUDA", file=sys.stderr)
        return 2
    found = rows(report)
    if not found:
        print(f"{args.report} holds no completed training run", file=sys.stderr)
        return 1
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
