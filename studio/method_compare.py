"""Compare methods: the same short run once per method, as one group, and the figures to judge them by.

    plan = plan_comparison(db, spec, ["lora", "vera", "ia3"])  # one spec per method, refusals with reasons
    plan = start_comparison(db, spec, ["lora", "vera", "ia3"])  # ... and one queued run per accepted method
    results(db, plan.run_ids)                                   # trainable, tokens/s, peak memory, final loss

Every run of a group has the spec it was started from but for three fields: ``method`` (that
method's default preset), ``name`` (the method's label added) and ``group`` (the group's id).
``train.learning_rate`` is left to each method's recommended rate (VeRA and IA3 train at ~10x
LoRA's; one shared rate would compare one method's settings with another's mistakes). Model, data,
steps, cut-off, batch and seed are the same. A method whose checks fail for this model or these
settings is refused with its reasons; a problem with the shared settings refuses the whole group.
Torch-free: the UI process calls it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from studio.methods import METHODS, ModelFacts
from studio.spec import Problem, RunSpec, SpecError
from studio.training import history
from studio.training import service as training

DEFAULT_METHODS = ("lora", "vera", "ia3")  # three families, each small on any model; the chat shows three adapters
MIN_METHODS, MAX_METHODS = 2, 6


@dataclass
class ComparisonPlan:
    group: str
    specs: list[RunSpec] = field(default_factory=list)  # one per accepted method, in the order asked
    refused: dict[str, list[Problem]] = field(default_factory=dict)  # method -> why it cannot run here
    common: list[Problem] = field(default_factory=list)  # problems of the shared settings: nothing runs
    run_ids: list[int] = field(default_factory=list)  # after start_comparison

    @property
    def methods(self) -> list[str]:
        return [s.method.name for s in self.specs]


def new_group_id() -> str:
    return f"cmp-{uuid.uuid4().hex[:8]}"


def method_spec(spec: RunSpec, method: str, group: str) -> RunSpec:
    """``spec`` with ``method``'s default preset, its recommended learning rate, the group and a name."""
    data = spec.to_dict()
    data["method"] = METHODS[method].preset().model_dump(mode="json")
    data["train"]["learning_rate"] = None
    data["group"] = group
    data["name"] = f"{(spec.name or f'compare {group}')[:150]} · {METHODS[method].label}"
    return RunSpec.model_validate(data)


def model_facts(spec: RunSpec) -> ModelFacts | None:
    """What the method checks need to know about the model, from its config.json (None: unreadable;
    the worker's pre-flight then reports it on each run)."""
    from studio.planning import is_vision_config, model_config

    try:
        config = model_config(spec.model, spec.trust_remote_code)
    except Exception:  # noqa: BLE001 - an unknown model is the pre-flight's to report, with its reason
        return None
    return ModelFacts(kind="vision-language" if is_vision_config(config) else "text",
                      model_type=config.get("model_type", ""), config=config)


def method_problems(db: Any, spec: RunSpec, facts: ModelFacts | None, local_paths: bool) -> list[Problem]:
    """The static checks of the spec, and the method's checks against the model (VL support, its own)."""
    from studio.training.preflight import method_model_problems

    _, problems = training.check_spec(db, spec, local_paths=local_paths)
    return problems + (method_model_problems(spec, facts) if facts is not None else [])


def plan_comparison(db: Any, spec: RunSpec, methods: list[str] | tuple[str, ...], *, local_paths: bool = True,
                    group: str | None = None) -> ComparisonPlan:
    """One spec per method that can run; the others refused with their problems."""
    plan = ComparisonPlan(group or new_group_id())
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        plan.common.append(Problem("method.name", f"unknown method(s) {', '.join(unknown)}",
                                   f"choose from {', '.join(METHODS)}"))
    if not MIN_METHODS <= len(methods) <= MAX_METHODS:
        plan.common.append(Problem("method.name", f"a comparison needs {MIN_METHODS} to {MAX_METHODS} methods, "
                                   f"not {len(methods)}", "tick two or more methods"))
    if plan.common:
        return plan
    facts, seen = model_facts(spec), set()
    for name in methods:
        candidate = method_spec(spec, name, plan.group)
        problems = method_problems(db, candidate, facts, local_paths)
        own = [p for p in problems if p.field.split(".")[0] == "method"]
        plan.common += [p for p in problems if p not in own and (p.field, p.message) not in seen]
        seen |= {(p.field, p.message) for p in problems}
        if own:
            plan.refused[name] = own
        else:
            plan.specs.append(candidate)
    return plan


def refusal_problems(plan: ComparisonPlan) -> list[Problem]:
    """Why a plan cannot start: the shared problems, else too few methods left after the refusals."""
    if plan.common:
        return plan.common
    if len(plan.specs) >= MIN_METHODS:
        return []
    return [Problem("method.name", f"{METHODS[m].label}: {p.message}", p.hint)
            for m, problems in plan.refused.items() for p in problems] + \
        [Problem("method.name", f"only {len(plan.specs)} of the methods can run here; a comparison needs "
                 f"{MIN_METHODS}", "tick other methods")]


def start_comparison(db: Any, spec: RunSpec, methods: list[str] | tuple[str, ...], *,
                     local_paths: bool = True) -> ComparisonPlan:
    """Plan, then queue one run per accepted method (same group). Raises SpecError when the shared
    settings have problems or fewer than two methods can run; refused methods are in ``plan.refused``."""
    plan = plan_comparison(db, spec, methods, local_paths=local_paths)
    problems = refusal_problems(plan)
    if problems:
        raise SpecError(problems)
    plan.run_ids = [training.start_run(db, s, local_paths=local_paths) for s in plan.specs]
    return plan


# -- a group's runs and their figures -------------------------------------------------------------------
def group_runs(db: Any, group: str) -> list[Any]:
    """The group's runs, in the order they were started."""
    return sorted((r for r in training.list_runs(db, limit=1000) if (r.spec or {}).get("group") == group),
                  key=lambda r: r.id)


def groups(db: Any) -> list[tuple[str, str]]:
    """(label, group id) of every comparison, newest first: "cmp-1a2b3c4d: LoRA, VeRA, IA3 (runs #4-#6)"."""
    found: dict[str, list[Any]] = {}
    for run in training.list_runs(db, limit=1000):
        group = (run.spec or {}).get("group")
        if group:
            found.setdefault(group, []).append(run)
    out = []
    for group, runs in found.items():
        runs.sort(key=lambda r: r.id)
        labels = ", ".join(METHODS[r.method].label if r.method in METHODS else r.method for r in runs)
        out.append((f"{group}: {labels} (runs #{runs[0].id}-#{runs[-1].id})", group))
    return out


@dataclass(frozen=True)
class MethodResult:
    """One run of a comparison, as the compare view shows it."""

    run_id: int
    method: str
    status: str
    trainable: int | None  # peft's count once trained; the estimator's (equal) count before
    trainable_measured: bool
    tokens_per_s: float | None  # the whole run's average once done; the latest step's before
    peak_bytes: int | None
    final_loss: float | None
    adapter_id: int | None


def job_result(db: Any, job_id: int | None) -> dict[str, Any]:
    """What the training job returned (figures of the whole run), or {} before it ends / without a job row."""
    from jobs import queue

    try:
        result = queue.get(db, job_id).result if job_id else None
    except LookupError:  # the job row is gone (older workspaces)
        return {}
    return result if isinstance(result, dict) else {}


def result(db: Any, run_id: int) -> MethodResult:
    run = training.get_run(db, run_id)
    done = job_result(db, run.job_id)
    latest = history.latest_metrics(db, run_id)
    measured = (done.get("model") or {}).get("trainable_parameters")
    trainable = measured if measured is not None else estimated_trainable(run.spec)
    adapters = training.run_adapters(db, run_id)
    return MethodResult(run_id, run.method, run.status, trainable, measured is not None,
                        done.get("tokens_per_s") or latest.get("tokens_per_s"),
                        run.measured_peak_bytes or latest.get("peak_memory_bytes"),
                        run.final_loss if run.final_loss is not None else latest.get("loss"),
                        adapters[-1].id if adapters else None)


def results(db: Any, run_ids: list[int]) -> list[MethodResult]:
    return [result(db, i) for i in run_ids]


def estimated_trainable(spec_data: dict[str, Any]) -> int | None:
    """The estimator's trainable-parameter count (equal to peft's) of a run that has not trained yet."""
    from studio.method_guide import numbers
    from studio.planning import model_config

    try:
        spec = RunSpec.model_validate(spec_data)
        return numbers(spec, model_config(spec.model, spec.trust_remote_code), METHODS[spec.method.name]).trainable
    except Exception:  # noqa: BLE001 - no figure is better than a wrong one
        return None


def adapter_ids(db: Any, group: str) -> list[int]:
    """The trained adapters of the group's runs, in run order (runs still training have none yet)."""
    return [r.adapter_id for r in results(db, [run.id for run in group_runs(db, group)]) if r.adapter_id]
