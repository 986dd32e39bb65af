"""Where a training run reports to: the database (runs in the studio), or nowhere (benchmarks,
non-zero ranks). The recipe only sees the ``Reporter`` interface."""
from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("studio.training")

# Share of the job's progress bar each stage covers: loading and tokenising are slow enough on
# big models that a bar stuck at 0% would look like a hang.
# In the order they happen: model files, tokenising, loading weights, training, saving.
STAGE_SPAN = {"prepare": (0.0, 0.03), "tokenize": (0.03, 0.07), "load": (0.07, 0.10), "train": (0.10, 0.95),
              "save": (0.95, 1.0)}


class Reporter(Protocol):
    def stage(self, name: str, message: str, fraction: float | None = None, **extra: Any) -> None: ...

    def metric(self, stage: str = "train", **fields: Any) -> None: ...

    def cancelled(self) -> bool: ...


class NullReporter:
    def __init__(self, echo: bool = False):
        self.echo = echo
        self.metrics: list[dict[str, Any]] = []

    def stage(self, name: str, message: str, fraction: float | None = None, **extra: Any) -> None:
        if self.echo:
            log.info("[%s] %s", name, message)

    def metric(self, stage: str = "train", **fields: Any) -> None:
        self.metrics.append({"stage": stage, **fields})

    def cancelled(self) -> bool:
        return False


class DbReporter:
    """Progress into the job row (``ctx.progress``), metrics into ``run_metrics``, the peak memory
    into the run row; cancellation from the job row (``ctx.cancelled`` polls at most once a second)."""

    METRIC_FIELDS = ("step", "total_steps", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm",
                     "tokens_per_s", "peak_memory_bytes", "eta_s",
                     "reward_margin", "reward_accuracy", "logps_chosen", "logps_rejected")  # preference stages

    def __init__(self, ctx: Any, run_id: int):
        self.ctx, self.db, self.run_id = ctx, ctx.db, run_id
        self._stage: str | None = None

    def stage(self, name: str, message: str, fraction: float | None = None, **extra: Any) -> None:
        lo, hi = STAGE_SPAN.get(name, (None, None))
        overall = lo + (hi - lo) * fraction if lo is not None and fraction is not None else None
        self.ctx.progress(overall, message, stage=name, **extra)
        if name != self._stage:
            self._stage = name
            if name != "train":
                self.metric(stage=name)  # a timestamped row when a slow phase starts: the run's timeline

    def metric(self, stage: str = "train", **fields: Any) -> None:
        from storage.models import Run, RunMetric

        values = {k: v for k, v in fields.items() if k in self.METRIC_FIELDS}
        with self.db.session() as s:
            s.add(RunMetric(run_id=self.run_id, stage=stage, **values))
            peak = values.get("peak_memory_bytes")
            if peak:
                run = s.get(Run, self.run_id)
                run.measured_peak_bytes = max(run.measured_peak_bytes or 0, int(peak))

    def cancelled(self) -> bool:
        return self.ctx.cancelled()
