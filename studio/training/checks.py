"""Checks of a run spec against the world: the model's config, the dataset, the device.

Each check returns a list of problems and never stops the others, so ``spec_problems`` reports
everything wrong with a spec at once. Nothing here loads weights: the model is read from its
config, images only from their headers.
"""
from __future__ import annotations

from typing import Any

from studio.methods import METHODS
from studio.methods.base import Problem
from studio.training.spec import LR_MAX, LR_MIN, RunSpec, plan_total_steps


def spec_problems(spec: RunSpec, db: Any = None, local_paths: bool = True) -> list[Problem]:
    """``local_paths=False`` (the UI): a ``data.path`` must lie inside the workspace, so a browser
    cannot make the server read arbitrary files; the CLI runs with the user's own rights."""
    info, problems = model_problems(spec)
    rows, data_problems = data_problems_and_rows(spec, db, local_paths)
    problems += data_problems
    problems += hyperparameter_problems(spec)
    problems += device_problems(spec)
    total_steps = plan_total_steps(len(rows.train), spec.train) if rows and rows.train else None
    problems += METHODS[spec.method.name].validate(spec, total_steps)
    if info is not None:
        problems += model_fit_problems(spec, info)
        if rows is not None:
            problems += data_fit_problems(spec, info, rows)
    return problems


# -- the model ----------------------------------------------------------------------------------------
def model_problems(spec: RunSpec) -> tuple[Any, list[Problem]]:
    from studio.models import ModelError, inspect

    try:
        info = inspect(spec.model, trust_remote_code=spec.trust_remote_code)
    except ModelError as e:
        return None, [Problem("model", str(e))]
    except Exception as e:  # an unreadable config: still a problem with the model, not a crash
        return None, [Problem("model", f"cannot read the model's config: {type(e).__name__}: {e}")]
    problems = []
    if info.requires_remote_code and not spec.trust_remote_code:
        problems.append(Problem("trust_remote_code", f"{spec.model} runs custom code from its repository",
                                "enable trust_remote_code for this model only if you trust its authors"))
    return info, problems


def model_fit_problems(spec: RunSpec, info: Any) -> list[Problem]:
    problems = []
    limit = getattr(info, "max_position_embeddings", None)
    if limit and spec.train.cutoff_len > limit:
        problems.append(Problem("train.cutoff_len", f"{spec.train.cutoff_len} tokens is longer than the model's "
                                f"context of {limit}", f"use at most {limit}"))
    if spec.train.packing:
        problems += packing_problems(info)
    if info.kind != "vision-language" and (spec.vision.vision_tower != "frozen" or spec.vision.projector != "frozen"):
        problems.append(Problem("vision", f"{spec.model} is a text model: it has no vision tower or projector to "
                                "train", "leave vision_tower and projector frozen"))
    return problems


def packing_problems(info: Any) -> list[Problem]:
    """Packing is only correct when attention keeps the packed rows apart: FlashAttention 2 reads
    the row boundaries from position ids. Elsewhere packed rows would attend to each other."""
    from studio.methods.base import package_available
    from studio.training.device import has_cuda

    if info.kind == "vision-language":
        return [Problem("train.packing", "packing is for text models; image rows cannot be packed",
                        "turn packing off")]
    if not (has_cuda() and package_available("flash_attn")):
        return [Problem("train.packing", "packing needs a CUDA GPU with the flash-attn package; without it packed "
                        "rows would see each other", "turn packing off")]
    return []


# -- the data -----------------------------------------------------------------------------------------
def data_problems_and_rows(spec: RunSpec, db: Any, local_paths: bool = True) -> tuple[Any, list[Problem]]:
    from studio.training.data import dataset_files, read_rows

    d = spec.data
    if (d.dataset_id is None) == (d.path is None):
        return None, [Problem("data", "give exactly one of dataset_id (an imported dataset) or path (a JSONL file)")]
    if d.path is not None and not local_paths:
        from storage.workspace import OutsideWorkspaceError

        try:
            db.workspace.confine(d.path)
        except OutsideWorkspaceError:
            return None, [Problem("data.path", f"{d.path} is outside the workspace",
                                  "import the file as a dataset, or copy it into the workspace")]
    if d.dataset_id is not None:
        if db is None:
            return None, [Problem("data.dataset_id", "a dataset id needs the studio database")]
        from studio.datasets.service import DatasetNotFound

        try:
            train_path, _ = dataset_files(d, db)
        except DatasetNotFound:
            return None, [Problem("data.dataset_id", f"there is no dataset with id {d.dataset_id}",
                                  "import the dataset first, or pick one from the list")]
    else:
        train_path, _ = dataset_files(d, db)
    if train_path is None:
        where = f"dataset {d.dataset_id}" if d.dataset_id is not None else d.path
        return None, [Problem("data", f"no training rows found at {where} (expected a JSONL file or a folder with "
                              "train.jsonl)")]
    try:
        rows = read_rows(d, db, spec.train.seed)
    except (OSError, ValueError) as e:
        return None, [Problem("data", f"cannot read the rows: {e}")]
    problems = []
    if not rows.train:
        problems.append(Problem("data", "the dataset has no training rows" +
                                (" left after holding out eval_fraction" if d.eval_fraction else "")))
    if spec.train.eval_steps and not rows.eval:
        problems.append(Problem("train.eval_steps", "evaluation is scheduled but there are no evaluation rows",
                                "set data.eval_fraction, or import the dataset with a validation split"))
    return rows, problems


def data_fit_problems(spec: RunSpec, info: Any, rows: Any) -> list[Problem]:
    """Images on a text model; images whose tokens alone exceed the cut-off."""
    from studio.training.data import image_token_count, row_images

    with_images = [(i, row_images(r)) for i, r in enumerate(rows.train + rows.eval)]
    with_images = [(i, imgs) for i, imgs in with_images if imgs]
    if not with_images:
        return []
    if info.kind != "vision-language":
        return [Problem("data", f"{len(with_images)} rows contain images but {spec.model} is a text-only model",
                        "choose a vision-language model (Qwen2.5-VL) or a text dataset")]
    vision = getattr(info, "vision", None) or {}
    factor = int(vision.get("patch_size", 14)) * int(vision.get("spatial_merge_size", 2))
    too_long, worst, unreadable = 0, 0, []
    for i, images in with_images:
        try:
            # +2 per image: its <|vision_start|> and <|vision_end|> tokens
            need = sum(image_token_count(p, spec.vision.min_pixels, spec.vision.max_pixels, factor) + 2
                       for p in images)
        except OSError as e:
            unreadable.append(f"row {i + 1}: {e}")
            continue
        if need >= spec.train.cutoff_len:
            too_long += 1
            worst = max(worst, need)
    problems = []
    if too_long:
        problems.append(Problem(
            "train.cutoff_len", f"{too_long} rows need {worst} tokens or more for their images alone, beyond the "
            f"cut-off of {spec.train.cutoff_len}; they would be cut inside an image",
            f"raise cutoff_len above {worst + 64} or lower vision.max_pixels"))
    if unreadable:
        problems.append(Problem("data", f"{len(unreadable)} images cannot be read: {'; '.join(unreadable[:3])}"))
    return problems


# -- hyperparameters and device ---------------------------------------------------------------------------
def hyperparameter_problems(spec: RunSpec) -> list[Problem]:
    problems = []
    lr = spec.learning_rate()
    if not LR_MIN <= lr <= LR_MAX:
        problems.append(Problem("train.learning_rate", f"{lr:g} is outside the sensible range {LR_MIN:g} to "
                                f"{LR_MAX:g} for adapter training",
                                f"{spec.method.name} usually trains well at "
                                f"{METHODS[spec.method.name].default_learning_rate:g}"))
    t = spec.train
    if t.eval_steps and t.max_steps and t.eval_steps > t.max_steps:
        problems.append(Problem("train.eval_steps", f"evaluation every {t.eval_steps} steps never happens in a "
                                f"{t.max_steps}-step run", "lower eval_steps"))
    return problems


def device_problems(spec: RunSpec) -> list[Problem]:
    from studio.training.device import has_cuda, precision_problems

    problems = precision_problems(spec.train.precision)
    n = spec.train.num_processes
    if n > 1 and has_cuda():
        import torch

        if n > torch.cuda.device_count():
            problems.append(Problem("train.num_processes", f"{n} processes need {n} GPUs; this machine has "
                                    f"{torch.cuda.device_count()}", f"use at most {torch.cuda.device_count()}"))
    if spec.method.name == "qlora":
        from studio.methods.qlora import kernel_problems
        from studio.training.device import resolve_precision

        problems += kernel_problems(resolve_precision(spec.train.precision))
    if n > 1 and spec.method.name == "qlora" and not has_cuda():
        problems.append(Problem("train.num_processes", "QLoRA with several processes needs GPUs",
                                "use one process, or LoRA"))
    return problems
