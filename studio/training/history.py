"""Runs as the history table, the live view and the comparison show them: plain rows, no ORM."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.models import JobStatus, Run, utcnow
from studio.activity import format_duration
from studio.training import service

GIB = 1024**3


@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    status: str
    model: str
    dataset: str
    method: str
    settings: str
    loss: str
    eval_loss: str
    duration: str
    memory: str
    attempts: str


def _settings(spec: dict[str, Any]) -> str:
    m, t = spec.get("method", {}), spec.get("train", {})
    rank = f"r={m['r']}" if "r" in m else f"r={m.get('init_r')}→{m.get('target_r')}" if "init_r" in m else ""
    bits = f" {m['bits']}-bit" if "bits" in m else ""
    lr = t.get("learning_rate")
    steps = f"{t['max_steps']} steps" if t.get("max_steps") else f"{t.get('epochs')} ep"
    return f"{rank}{bits} · lr {lr:g} · bs {t.get('batch_size')}×{t.get('grad_accum')} · {steps} · len {t.get('cutoff_len')}" \
        if lr else f"{rank}{bits} · bs {t.get('batch_size')}×{t.get('grad_accum')} · {steps}"


def memory_text(run: Run) -> str:
    est = f"{run.estimated_peak_bytes / GIB:.1f}" if run.estimated_peak_bytes else "?"
    meas = f"{run.measured_peak_bytes / GIB:.1f}" if run.measured_peak_bytes else "?"
    return f"{est} / {meas} GiB"


def _duration(run: Run) -> str:
    if run.started_at is None:
        return ""
    return format_duration(((run.finished_at or utcnow()) - run.started_at).total_seconds())


def _fmt(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else ""


def run_rows(db: Any, status: str | None = None, method: str | None = None, dataset_names: dict[int, str] | None = None
             ) -> list[RunRow]:
    names = dataset_names or {}
    rows = []
    for r in service.list_runs(db):
        if (status and r.status != status) or (method and r.method != method):
            continue
        rows.append(RunRow(r.id, r.name, r.status, r.model_ref.removeprefix("builtin:"),
                           names.get(r.dataset_id, f"#{r.dataset_id}" if r.dataset_id else "file"), r.method,
                           _settings(r.spec or {}), _fmt(r.final_loss), _fmt(r.final_eval_loss), _duration(r),
                           memory_text(r), attempts_text(db, r)))
    return rows


SMOOTHING = 0.6  # TensorBoard's default: each point keeps 60% of the running average


def ema(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the start is not pulled
    towards zero (the first points would otherwise look far lower than they were)."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last, norm = last * weight + (1 - weight) * v, norm * weight + (1 - weight)
        out.append(last / norm)
    return out


def attempts_text(db: Any, run: Any) -> str:
    """How often a worker ran it and how far each attempt got: "3: 0→20 worker lost, 20→40 worker
    lost, 40→60" (steps of the complete checkpoints each began and ended with)."""
    if run.attempts:
        return f"{len(run.attempts)}: " + ", ".join(_attempt_short(a) for a in run.attempts)
    from jobs import queue

    try:
        job = queue.get(db, run.job_id) if run.job_id else None
    except LookupError:  # the job row is gone (older workspaces)
        job = None
    if job is None or not job.attempts:
        return ""
    resumed = (job.result or {}).get("resumed_from_step") if isinstance(job.result, dict) else None
    text = f"{job.attempts}" if job.attempts == 1 else f"{job.attempts} (interrupted, resumed)"
    return text + (f", resumed at step {resumed}" if resumed else "")


def _attempt_short(a: dict[str, Any]) -> str:
    steps = f"{a.get('from_step', 0)}→{a['to_step']}" if a.get("to_step") is not None else f"{a.get('from_step', 0)}→"
    outcome = a.get("outcome")
    if outcome is None:
        return steps + " running"
    return steps + ("" if outcome == "succeeded" else " worker lost" if outcome == "worker-lost" else f" {outcome}")


def attempt_lines(run: Any) -> list[str]:
    """One sentence per attempt for the run's live view."""
    lines = []
    for a in run.attempts or []:
        end = f"ended {a['ended']}" if a.get("ended") else "running"
        steps = f"from step {a.get('from_step', 0)}" + (f" to {a['to_step']}" if a.get("to_step") is not None else "")
        why = "" if a.get("outcome") in (None, "succeeded") else _why(a)
        lines.append(f"#{a.get('n')} ({a.get('trigger')}) started {a.get('started')}, {end} · {steps}{why}")
    return lines


def _why(attempt: dict[str, Any]) -> str:
    """" · out of memory at step 3 -> retried with batch 2 x accumulation 4" (the reason says the
    outcome already) or " · failed: <reason>"."""
    outcome, why = attempt["outcome"], attempt.get("why") or ""
    text = f" · {why}" if why.startswith(outcome) else f" · {outcome}: {why}"
    return text + (f" · fix: {attempt['fix']}" if attempt.get("fix") and not attempt.get("requeued") else "")


def loss_points(db: Any, run_ids: list[int], label_runs: bool = True) -> list[dict[str, Any]]:
    """Long-form points for a line plot, per run: the raw per-step training loss (drawn faint), its
    smoothed trend, and the evaluation loss. ``label_runs=False`` (one run's live view): the series
    are always the same three names, so the plot's colour scale never has to learn new ones."""
    points = []
    for run_id in run_ids:
        label = f"#{run_id}" if label_runs else ""
        train = [(m.step, m.loss) for m in service.run_metrics(db, run_id, stage="train")
                 if m.step is not None and m.loss is not None]
        points += [{"step": s, "loss": v, "series": f"{label} train (raw)".strip()} for s, v in train]
        points += [{"step": s, "loss": v, "series": f"{label} train".strip()}
                   for (s, _), v in zip(train, ema([v for _, v in train]))]
        points += [{"step": m.step, "loss": m.eval_loss, "series": f"{label} eval".strip()}
                   for m in service.run_metrics(db, run_id, stage="eval")
                   if m.step is not None and m.eval_loss is not None]
    return points


RUN_COLOURS = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be123c"]
RAW_COLOURS = ["#bfdbfe", "#bbf7d0", "#e9d5ff", "#fed7aa", "#a5f3fc", "#fecdd3"]
EVAL_COLOURS = ["#1e3a8a", "#14532d", "#581c87", "#7c2d12", "#164e63", "#881337"]


def series_names(run_ids: list[int], label_runs: bool = True) -> list[str]:
    """Every series ``loss_points`` can produce for these runs, points or not."""
    if not label_runs:
        return ["train", "train (raw)", "eval"]
    return [f"#{r} {kind}" for r in run_ids for kind in ("train", "train (raw)", "eval")]


LIVE_COLOURS = {"train": RUN_COLOURS[0], "train (raw)": RAW_COLOURS[0], "eval": EVAL_COLOURS[0]}


def loss_colours(run_ids: list[int]) -> dict[str, str]:
    """Series -> colour: each run its own hue; the raw line a pale tint behind the smoothed one."""
    out = {}
    for i, run_id in enumerate(run_ids):
        k = i % len(RUN_COLOURS)
        out.update({f"#{run_id} train": RUN_COLOURS[k], f"#{run_id} train (raw)": RAW_COLOURS[k],
                    f"#{run_id} eval": EVAL_COLOURS[k]})
    return out


def latest_metrics(db: Any, run_id: int) -> dict[str, Any]:
    """The newest training row's figures (what the live view shows beside the plot)."""
    for m in reversed(service.run_metrics(db, run_id, stage="train")):
        if m.step is not None:
            return {"step": m.step, "total_steps": m.total_steps, "epoch": m.epoch, "loss": m.loss,
                    "learning_rate": m.learning_rate, "grad_norm": m.grad_norm, "tokens_per_s": m.tokens_per_s,
                    "peak_memory_bytes": m.peak_memory_bytes, "eta_s": m.eta_s,
                    # preference stages (dpo, kto, reward)
                    "reward_accuracy": m.reward_accuracy, "reward_margin": m.reward_margin,
                    "logps_chosen": m.logps_chosen, "logps_rejected": m.logps_rejected}
    return {}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def spec_diff(db: Any, run_ids: list[int]) -> list[list[Any]]:
    """[field, value in run 1, value in run 2, ...] for every field that differs."""
    flat = [_flatten(service.get_run(db, i).spec or {}) for i in run_ids]
    keys = sorted(set().union(*flat)) if flat else []
    return [[k, *[str(f.get(k, "—")) for f in flat]] for k in keys if len({str(f.get(k)) for f in flat}) > 1]


def is_active(status: str) -> bool:
    return status in (JobStatus.QUEUED, JobStatus.RUNNING)


def adapters(db: Any, base_ref: str | None = None) -> list[dict[str, Any]]:
    """Adapters the studio trained, newest first, optionally only those of one base model."""
    from sqlalchemy import select

    from storage.models import Adapter

    with db.session() as s:
        q = select(Adapter).order_by(Adapter.id.desc())
        if base_ref:
            q = q.where(Adapter.base_model_ref == base_ref)
        return [{"id": a.id, "run_id": a.run_id, "name": a.name, "method": a.method, "base": a.base_model_ref,
                 "label": f"#{a.id} {a.name} ({a.method}, run #{a.run_id})", "stage": adapter_stage(s, a.run_id),
                 "summary": training_summary(s, a.run_id)} for a in s.scalars(q)]


def adapter_stage(session: Any, run_id: int | None) -> str:
    """The stage that trained an adapter (sft, dpo, kto, reward); sft for adapters from elsewhere.
    A reward model scores answers and does not write them: chat panes and merged exports skip it."""
    from storage.models import Run

    run = session.get(Run, run_id) if run_id else None
    return (((run.spec or {}) if run is not None else {}).get("stage") or {}).get("name") or "sft"


def training_summary(session: Any, run_id: int | None) -> str:
    """What the adapter went through, in a line: steps, loss from first to last, dataset."""
    from sqlalchemy import func, select

    from storage.models import Run, RunMetric

    run = session.get(Run, run_id) if run_id else None
    if run is None:
        return "not trained in this studio"
    steps = session.scalar(select(func.max(RunMetric.step)).where(RunMetric.run_id == run_id,
                                                                   RunMetric.stage == "train")) or 0
    first = session.scalar(select(RunMetric.loss).where(RunMetric.run_id == run_id, RunMetric.stage == "train",
                                                         RunMetric.loss.is_not(None)).order_by(RunMetric.step).limit(1))
    loss = f", loss {first:.3f} → {run.final_loss:.3f}" if first is not None and run.final_loss is not None else ""
    return f"{steps} steps{loss}"
