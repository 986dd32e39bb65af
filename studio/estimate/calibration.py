"""How sure the estimate is: its error on the published runs it was checked against.

``error_band.json`` is data written by ``python bench/bench_estimate.py --write-band`` from
``published_runs.json`` (the test ``tests/estimate/test_published.py`` recomputes it and fails when
the file is stale). The band is the 90th percentile of |estimate / published - 1| over the
comparable runs (whole percent, rounded up), overall and per method family where a family has at
least ``MIN_FAMILY_RUNS`` runs; a request gets its family's band, else the overall one.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

BAND_FILE = Path(__file__).with_name("error_band.json")
QUANTILE = 0.90
MIN_FAMILY_RUNS = 5
FAMILIES = {"lora": "lora", "dora": "lora", "adalora": "lora", "qlora": "qlora", "full": "full"}


@dataclass(frozen=True)
class ErrorBand:
    """``pct``: expected relative error (0.12 = ±12%) over ``runs`` published runs of ``scope``."""

    pct: float
    runs: int
    scope: str = "all"

    def upper(self, total_bytes: int) -> int:
        return int(round(total_bytes * (1 + self.pct)))

    def lower(self, total_bytes: int) -> int:
        return int(round(total_bytes * (1 - self.pct)))

    def text(self) -> str:
        what = "" if self.scope == "all" else f" of {self.scope}"
        return f"±{self.pct * 100:.0f}%, {self.runs} published runs{what}"

    def as_dict(self) -> dict[str, Any]:
        return {"pct": self.pct, "runs": self.runs, "scope": self.scope, "text": self.text()}


def band_of(errors: Iterable[float], scope: str = "all") -> ErrorBand:
    """The band covering ``QUANTILE`` of the absolute errors (nearest rank), in whole percent."""
    values = sorted(abs(e) for e in errors)
    if not values:
        raise ValueError("no errors to make a band from")
    k = max(0, math.ceil(QUANTILE * len(values)) - 1)
    return ErrorBand(math.ceil(round(values[k] * 100, 6)) / 100, len(values), scope)


def bands_from(comparisons: list[Any]) -> dict[str, Any]:
    """The file's content from published-run comparisons (``studio.estimate.published.Comparison``)."""
    rows = [c for c in comparisons if c.comparable]
    out = {"all": band_of([c.error for c in rows]).as_dict()}
    for family in sorted(set(FAMILIES.values())):
        errors = [c.error for c in rows if FAMILIES.get(c.run["method"]) == family]
        if len(errors) >= MIN_FAMILY_RUNS:
            out[family] = band_of(errors, family).as_dict()
    return out


@lru_cache(maxsize=1)
def _stored() -> dict[str, ErrorBand]:
    if not BAND_FILE.exists():
        return {}
    data = json.loads(BAND_FILE.read_text(encoding="utf-8"))
    return {k: ErrorBand(float(v["pct"]), int(v["runs"]), v.get("scope", k)) for k, v in data.items()}


def band_for(req: Any) -> ErrorBand | None:
    """The stored band of the request's method family, or the overall band; None without a file."""
    bands = _stored()
    return bands.get(FAMILIES.get(req.method, ""), bands.get("all"))


def band_of_all() -> ErrorBand | None:
    """The overall stored band (None without a file)."""
    return _stored().get("all")
