"""The worker's pre-flight: the checks that need the machine that trains, the model's config or
every row of the data. They run in the training job before step one, on the worker that will
train (which may be another machine than the one serving the UI), and their problems land on the
run row. The static checks (``studio.spec.checks``) already ran where the spec was built.

Each check returns a list of problems and never stops the others, so everything wrong is reported
at once. Nothing here loads weights: the model is read from its config, images from their headers.
"""
from __future__ import annotations

from typing import Any

from studio.methods import METHODS
from studio.spec import Problem, RunSpec, plan_total_steps


def preflight_problems(spec: RunSpec, db: Any = None, read_data: bool = True) -> list[Problem]:
    """``read_data=False`` when the data source itself was refused (nothing to read)."""
    info, problems = model_problems(spec)
    rows, data_problems = data_problems_and_rows(spec, db) if read_data else (None, [])
    problems += data_problems
    problems += device_problems(spec)
    if rows is not None and rows.train:  # the exact step count, now that the rows are read
        problems += [p for p in METHODS[spec.method.name].validate(spec, plan_total_steps(len(rows.train), spec.train))
                     if p.field.startswith("method.")]
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
    problems += method_model_problems(spec, info)
    problems += stage_model_problems(spec, info)
    if info.kind != "vision-language" and (spec.vision.vision_tower != "frozen" or spec.vision.projector != "frozen"):
        problems.append(Problem("vision", f"{spec.model} is a text model: it has no vision tower or projector to "
                                "train", "leave vision_tower and projector frozen"))
    return problems


def stage_model_problems(spec: RunSpec, info: Any) -> list[Problem]:
    """A reward model is the base with a score head (``AutoModelForSequenceClassification``), which
    transformers has for text models only."""
    if spec.stage.name == "reward" and info.kind == "vision-language":
        return [Problem("stage.name", f"a reward model needs a text model; {spec.model} is a vision-language model "
                        "(transformers has no sequence-classification head for it)",
                        "train the reward model on a text model, or use dpo/kto on this one")]
    return []


def method_model_problems(spec: RunSpec, info: Any) -> list[Problem]:
    """The method with this model: VL support (the method table's ``vision`` flag) and its own checks."""
    from studio.methods import ModelFacts

    method, facts = METHODS[spec.method.name], ModelFacts.of(info)
    if facts.is_vision and not method.vision:
        return [Problem("method.name", f"{method.label} cannot train the vision-language model {spec.model}: "
                        f"{method.vision_refusal}",
                        "choose LoRA, QLoRA or another method marked for vision-language models")]
    return method.model_problems(spec, facts)


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
def data_problems_and_rows(spec: RunSpec, db: Any) -> tuple[Any, list[Problem]]:
    """The rows, read as training will read them, and what is wrong with them."""
    from studio.training.data import read_rows

    d = spec.data
    try:
        rows = read_rows(d, db, spec.train.seed)
    except (OSError, ValueError, LookupError) as e:
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
def device_problems(spec: RunSpec) -> list[Problem]:
    from studio.training.device import has_cuda, precision_problems

    problems = precision_problems(spec.train.precision)
    n = spec.train.num_processes
    if n > 1 and has_cuda():
        import torch

        if n > torch.cuda.device_count():
            problems.append(Problem("train.num_processes", f"{n} processes need {n} GPUs; this machine has "
                                    f"{torch.cuda.device_count()}", f"use at most {torch.cuda.device_count()}"))
    method = METHODS[spec.method.name]
    problems += method.device_problems(spec)
    limit = method.max_processes_without_gpu
    if limit is not None and n > limit and not has_cuda():
        problems.append(Problem("train.num_processes", f"{method.label} with {n} processes needs GPUs",
                                f"use {limit} process, or LoRA"))
    return problems
