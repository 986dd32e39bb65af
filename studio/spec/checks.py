"""Static checks: what can be judged where the spec is built, without the device or the rows.

Ranges that depend on each other, the data source (the dataset exists, a file path is allowed),
and each method's own rules. These run in the web process and the CLI before anything is queued;
whatever needs the machine that trains (CUDA, bf16, GPUs, bitsandbytes' kernels), the model's
config or every row is the worker's pre-flight (``studio.training.preflight``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from studio.spec.problems import Problem
from studio.spec.registry import method_entry
from studio.spec.run import LR_MAX, LR_MIN, RunSpec, plan_total_steps
from studio.spec.stages import STAGE_DATA, STAGE_WORDS, start_from_parts


def static_problems(spec: RunSpec, db: Any = None, local_paths: bool = True) -> list[Problem]:
    """Every static problem at once. ``local_paths=False`` (specs from a browser): a ``data.path``
    must lie inside the workspace, so a browser cannot make the server read arbitrary files."""
    num_train, problems = data_source_problems(spec, db, local_paths)
    problems += hyperparameter_problems(spec)
    problems += stage_problems(spec, db, local_paths)
    total_steps = plan_total_steps(num_train, spec.train) if num_train else None
    problems += method_entry(spec.method.name).validate(spec, total_steps)
    return problems


def data_source_problems(spec: RunSpec, db: Any, local_paths: bool) -> tuple[int | None, list[Problem]]:
    """(training rows when known without reading them, problems with where the rows come from)."""
    d = spec.data
    if (d.dataset_id is None) == (d.path is None):
        return None, [Problem("data", "give exactly one of dataset_id (an imported dataset) or path (a JSONL file)")]
    if d.dataset_id is not None:
        return dataset_row_problems(d.dataset_id, db, d)
    if not local_paths:
        from storage.workspace import OutsideWorkspaceError

        try:
            db.workspace.confine(d.path)
        except OutsideWorkspaceError:
            return None, [Problem("data.path", f"{d.path} is outside the workspace",
                                  "import the file as a dataset, or copy it into the workspace")]
    path = Path(d.path).expanduser()
    train = path if path.is_file() else path / "train.jsonl"
    if not train.is_file():
        return None, [Problem("data", f"no training rows found at {d.path} (expected a JSONL file or a folder with "
                              "train.jsonl)")]
    return None, []


def dataset_row_problems(dataset_id: int, db: Any, d: Any) -> tuple[int | None, list[Problem]]:
    if db is None:
        return None, [Problem("data.dataset_id", "a dataset id needs the studio database")]
    from storage.models import Dataset

    with db.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            return None, [Problem("data.dataset_id", f"there is no dataset with id {dataset_id}",
                                  "import the dataset first, or pick one from the list")]
        num_train, num_validation = row.num_train, row.num_validation
    if num_validation == 0 and d.eval_fraction > 0 and num_train > 1:  # as studio.training.data.read_rows holds out
        num_train -= max(1, round(num_train * d.eval_fraction))
    if d.max_rows:
        num_train = min(num_train, d.max_rows)
    if num_train <= 0:
        return None, [Problem("data", "the dataset has no training rows" +
                              (" left after holding out eval_fraction" if d.eval_fraction else ""))]
    return num_train, []


def hyperparameter_problems(spec: RunSpec) -> list[Problem]:
    problems = []
    lr = spec.learning_rate()
    if not LR_MIN <= lr <= LR_MAX:
        problems.append(Problem("train.learning_rate", f"{lr:g} is outside the sensible range {LR_MIN:g} to "
                                f"{LR_MAX:g} for adapter training",
                                f"{spec.method.name} usually trains well at "
                                f"{method_entry(spec.method.name).default_learning_rate:g}"))
    t = spec.train
    if t.eval_steps and t.max_steps and t.eval_steps > t.max_steps:
        problems.append(Problem("train.eval_steps", f"evaluation every {t.eval_steps} steps never happens in a "
                                f"{t.max_steps}-step run", "lower eval_steps"))
    return problems


# -- the training stage ------------------------------------------------------------------------------
DATA_WORDS = {"sft": "instruction rows", "preference": "preference pairs (prompt/chosen/rejected)",
              "kto": "KTO rows (prompt/completion/label)"}


def stage_problems(spec: RunSpec, db: Any, local_paths: bool = True) -> list[Problem]:
    """The data's kind fits the stage; the adapter to continue exists and belongs to this model."""
    stage = spec.stage
    problems = []
    kind = data_kind(spec, db)
    if kind is not None and kind not in STAGE_DATA[stage.name]:
        wanted = " or ".join(DATA_WORDS[k] for k in STAGE_DATA[stage.name])
        problems.append(Problem("stage.name", f"{stage.name} ({STAGE_WORDS[stage.name]}) needs {wanted}, but the "
                                f"dataset holds {DATA_WORDS.get(kind, kind)}",
                                "pick a dataset of the right kind, or the stage that fits this dataset"))
    if stage.start_from:
        if stage.name not in ("dpo", "kto"):
            problems.append(Problem("stage.start_from", f"continuing an adapter is for dpo and kto, not {stage.name}",
                                    "clear start_from, or choose the dpo stage"))
        else:
            problems += start_from_problems(spec, db, local_paths)
    return problems


def data_kind(spec: RunSpec, db: Any) -> str | None:
    """``sft``/``preference``/``kto`` of the spec's data, or None when it cannot be told here."""
    if spec.data.dataset_id is not None:
        if db is None:
            return None
        from storage.models import Dataset

        with db.session() as s:
            row = s.get(Dataset, spec.data.dataset_id)
            return None if row is None else (row.info or {}).get("kind", "sft")
    if spec.data.path is None:
        return None
    path = Path(spec.data.path).expanduser()
    train = path if path.is_file() else path / "train.jsonl"
    try:
        with train.open(encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), None)
    except OSError:
        return None
    import json

    try:
        return json.loads(first).get("kind", "sft") if first else None
    except (ValueError, AttributeError):
        return None


def start_from_problems(spec: RunSpec, db: Any, local_paths: bool = True) -> list[Problem]:
    ref = spec.stage.start_from
    parts = start_from_parts(ref)
    if parts is None:
        if not local_paths:  # a browser names studio adapters, never server folders
            return [Problem("stage.start_from", f"{ref} is not adapter:<id> or run:<id>",
                            "pick the adapter to continue from the list")]
        folder = Path(ref).expanduser()
        if not (folder / "adapter_config.json").is_file():
            return [Problem("stage.start_from", f"{ref} is not an adapter folder (no adapter_config.json)",
                            "give adapter:<id> or run:<id> from the studio, or a folder saved by peft")]
        return []
    if db is None:
        return [Problem("stage.start_from", f"{ref} needs the studio database")]
    from storage.models import Adapter

    kind, number = parts
    with db.session() as s:
        if kind == "adapter":
            adapter = s.get(Adapter, number)
        else:
            adapter = s.query(Adapter).filter(Adapter.run_id == number).order_by(Adapter.id.desc()).first()
        if adapter is None:
            return [Problem("stage.start_from", f"there is no {'adapter' if kind == 'adapter' else 'finished run'} "
                            f"with id {number}", "pick an adapter from the Chat or Export tab's list")]
        if adapter.base_model_ref != spec.model:
            return [Problem("stage.start_from", f"adapter {adapter.id} was trained on {adapter.base_model_ref}, not "
                            f"{spec.model}", f"set model to {adapter.base_model_ref}")]
    return []
