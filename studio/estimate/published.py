"""Compare the estimator with published, measured fine-tuning peaks (``published_runs.json``).

Rule used by the tests and the CLI: an entry agrees when the estimate is within 15% of the
published number; the estimator passes when at least 70% of the comparable entries agree.
What is compared depends on what the source measured: PyTorch's peak *reserved* memory is
compared with the estimate without the CUDA context; peak *active/allocated* memory also without
the fragmentation allowance; a whole-device number with the full estimate.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from studio.estimate.configs import lookup_config
from studio.estimate.estimator import estimate
from studio.estimate.request import GIB, Estimate, EstimateRequest

RUNS_FILE = Path(__file__).with_name("published_runs.json")
TOLERANCE = 0.15
MIN_AGREEING = 0.70
_UNIT = {"GB": 1e9, "GiB": GIB}
_REQUEST_FIELDS = ("method", "lora_rank", "targets", "dtype", "quant_bits", "double_quant", "optimizer", "batch_size",
                   "grad_accum", "seq_len", "gradient_checkpointing", "attention", "max_pixels", "images_per_sample",
                   "tune_vision", "num_gpus", "strategy", "adapter_dtype", "master_weights", "kbit_fp32_upcast",
                   "adalora_init_rank", "trainer", "padding_free", "packing", "lora_dropout", "feedforward")


@lru_cache(maxsize=1)
def load_published_runs() -> list[dict[str, Any]]:
    with RUNS_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)["runs"]


def request_for(run: dict[str, Any]) -> EstimateRequest:
    kwargs = {k: run[k] for k in _REQUEST_FIELDS if k in run}
    for name in ("targets", "feedforward"):  # JSON lists -> the request's tuples
        if isinstance(kwargs.get(name), list):
            kwargs[name] = tuple(kwargs[name])
    return EstimateRequest(config=lookup_config(run["model"]), **kwargs)


def comparable_bytes(est: Estimate, measure: str) -> int:
    """The part of the estimate that the source's measurement sees."""
    if measure == "device_total":
        return est.total_bytes
    if measure == "torch_max_reserved":
        return est.allocator_bytes
    return est.allocator_bytes - est.parts.get("allocator_fragmentation", 0)


@dataclass(frozen=True)
class Comparison:
    run: dict[str, Any]
    estimate: Estimate
    estimated_bytes: int
    published_bytes: float

    @property
    def error(self) -> float:
        """(estimate - published) / published."""
        return self.estimated_bytes / self.published_bytes - 1

    @property
    def agrees(self) -> bool:
        return abs(self.error) <= TOLERANCE

    @property
    def comparable(self) -> bool:
        return bool(self.run.get("comparable", True))


def compare_published() -> list[Comparison]:
    out = []
    for run in load_published_runs():
        est = estimate(request_for(run))
        out.append(Comparison(run, est, comparable_bytes(est, run["measure"]), run["measured"] * _UNIT[run["unit"]]))
    return out


def agreement(comparisons: list[Comparison]) -> tuple[int, int]:
    """(agreeing, total) over the comparable entries."""
    comparable = [c for c in comparisons if c.comparable]
    return sum(c.agrees for c in comparable), len(comparable)


def source_of(run: dict[str, Any]) -> str:
    """The project a run comes from: the id's first word (peft, torchtune, unsloth, ...)."""
    return run["id"].split("-", 1)[0]


def summary(comparisons: list[Comparison]) -> dict[str, Any]:
    """runs, 'k/n' within the tolerance, mean absolute error and mean error over comparable runs."""
    rows = [c for c in comparisons if c.comparable]
    n = len(rows)
    return {"runs": n, "within": f"{sum(c.agrees for c in rows)}/{n}",
            "mae": sum(abs(c.error) for c in rows) / n if n else 0.0,
            "bias": sum(c.error for c in rows) / n if n else 0.0}


def error_by_source(comparisons: list[Comparison]) -> dict[str, dict[str, Any]]:
    """``summary`` per source project (a source whose runs are all not comparable shows 0 runs)."""
    sources = sorted({source_of(c.run) for c in comparisons})
    return {s: summary([c for c in comparisons if source_of(c.run) == s]) for s in sources}


def format_table(comparisons: list[Comparison]) -> str:
    unit = {"GB": 1e9, "GiB": GIB}
    head = f"{'run':36} {'method':7} {'b x seq':>10} {'ckpt':4} {'published':>12} {'estimate':>12} {'error':>7}  ok"
    lines = [head, "-" * len(head)]
    for c in comparisons:
        r = c.run
        u = unit[r["unit"]]
        ok = ("yes" if c.agrees else "NO") if c.comparable else "n/a"
        lines.append(f"{r['id'][:36]:36} {r['method']:7} {r['batch_size']:>3} x {r['seq_len']:<5} "
                     f"{'on' if r.get('gradient_checkpointing') else 'off':4} {r['measured']:>8.2f} {r['unit']:3} "
                     f"{c.estimated_bytes / u:>8.2f} {r['unit']:3} {c.error * 100:+6.1f}%  {ok}")
    good, total = agreement(comparisons)
    lines.append(f"within {TOLERANCE:.0%}: {good}/{total} comparable entries "
                 f"(rule: at least {MIN_AGREEING:.0%}); n/a = setup not modeled, shown for reference")
    return "\n".join(lines)
