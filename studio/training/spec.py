"""The run spec: one typed object that *is* the configuration of a training run.

The UI fills it from widgets, the CLI reads it from YAML, the job writes it (fully resolved) beside
the adapter, and the same YAML runs again headless::

    model: builtin:smollm2-135m-instruct
    data: {dataset_id: 3, eval_fraction: 0.1}
    method: {name: lora, preset: balanced, r: 8}
    train: {epochs: 2, batch_size: 4, grad_accum: 2, cutoff_len: 512}

Field-level problems (types, ranges, unknown keys) come from pydantic; ``validate_spec`` adds the
problems that need the database, the model's config or the data — and reports every one at once.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from studio.methods import METHODS
from studio.methods.base import Problem

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"]

LR_MIN, LR_MAX = 1e-7, 1e-2  # outside this a PEFT run either learns nothing or diverges


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(_Strict):
    """Where the rows come from: a dataset imported into the studio, or a canonical JSONL file
    (headless runs; image paths are relative to the file's folder)."""

    dataset_id: int | None = Field(None, ge=1)
    path: str | None = None
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                 description="share of training rows held out for eval loss when the dataset has "
                                             "no validation split")
    max_rows: int | None = Field(None, ge=1, description="use only the first N training rows (quick trials)")
    max_eval_rows: int | None = Field(200, ge=1, description="cap on evaluation rows, to keep evaluation short")


class TrainSettings(_Strict):
    epochs: float = Field(3.0, gt=0.0, le=1000.0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float | None = Field(None, gt=0.0, description="None: the method's recommended rate")
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    batch_size: int = Field(2, ge=1, le=4096, description="rows per device per forward pass")
    grad_accum: int = Field(4, ge=1, le=4096, description="forward passes per optimizer step")
    cutoff_len: int = Field(1024, ge=16, le=1_048_576, description="longest tokenised row; longer rows are cut")
    seed: int = 42
    precision: Precision = "auto"
    gradient_checkpointing: bool = True
    packing: bool = Field(False, description="pack short text rows into cutoff_len blocks without padding (text "
                                             "models on a GPU with FlashAttention 2, which keeps rows apart)")
    logging_steps: int = Field(5, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (None: only at the end)")
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1, description="complete checkpoints kept for resuming")
    num_processes: int = Field(1, ge=1, le=64, description="training processes (GPUs); >1 launches torchrun")



class VisionSettings(_Strict):
    """Qwen2.5-VL only: image resolution bounds and which parts of the vision side train."""

    min_pixels: int = Field(28 * 28 * 4, ge=28 * 28)
    max_pixels: int = Field(512 * 512, ge=28 * 28)
    vision_tower: Literal["frozen", "lora"] = "frozen"
    projector: Literal["frozen", "lora", "full"] = "frozen"

    @model_validator(mode="after")
    def _bounds(self) -> "VisionSettings":
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")
        return self


def _method_union():
    settings = tuple(m.settings_cls for m in METHODS.values())
    return Annotated[Union[settings], Field(discriminator="name")]  # type: ignore[valid-type]


MethodSpec = _method_union()


class RunSpec(_Strict):
    name: str | None = Field(None, max_length=200)
    model: str = Field(..., min_length=1, description="a model ref: builtin:..., a Hub id or a local folder")
    trust_remote_code: bool = Field(False, description="run Python code shipped with the model (opt-in)")
    data: DataSpec
    method: MethodSpec = Field(default_factory=lambda: METHODS["lora"].preset())
    train: TrainSettings = Field(default_factory=TrainSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)

    @field_validator("method", mode="before")
    @classmethod
    def _method_from_preset(cls, value: Any) -> Any:
        """Accept ``method: lora`` or ``{name: lora, preset: light, r: 4}``: a preset, then overrides."""
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and value.get("name") in METHODS:
            method = METHODS[value["name"]]
            value = dict(value)
            preset = value.pop("preset", None) or method.default_preset
            if preset not in method.presets:
                raise ValueError(f"unknown preset {preset!r} for {value['name']}; choose one of "
                                 f"{', '.join(method.presets)}")
            base = method.presets[preset].model_dump()
            value = {**base, **value}
        return value

    # -- derived ----------------------------------------------------------------------------------
    @property
    def method_name(self) -> str:
        return self.method.name

    def learning_rate(self) -> float:
        return self.train.learning_rate or METHODS[self.method.name].default_learning_rate

    def display_name(self) -> str:
        return self.name or f"{self.method.name} on {self.model.split(':')[-1].split('/')[-1]}"

    # -- YAML -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str) -> "RunSpec":
        return cls.model_validate(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: str | Path) -> "RunSpec":
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"))


class SpecError(ValueError):
    """A spec was refused; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the run spec has {len(self.problems)} problem(s):\n{lines}")


def problems_of_validation_error(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        if len(loc) > 1 and loc[0] == "method" and loc[1] in METHODS:
            del loc[1]  # pydantic names the union member it tried: ("method", "lora", "r") -> method.r
        out.append(Problem(".".join(loc) or "spec", e["msg"]))
    return out


def parse_spec(data: dict[str, Any] | str | RunSpec) -> tuple[RunSpec | None, list[Problem]]:
    """A RunSpec from a dict or YAML text, or every field problem pydantic found."""
    if isinstance(data, RunSpec):
        return data, []
    try:
        return (RunSpec.from_yaml(data) if isinstance(data, str) else RunSpec.model_validate(data)), []
    except ValidationError as e:
        return None, problems_of_validation_error(e)
    except yaml.YAMLError as e:
        return None, [Problem("spec", f"not valid YAML: {e}")]


def plan_total_steps(num_train_rows: int, train: TrainSettings) -> int:
    """Optimizer steps the trainer will run: ceil(batches / grad_accum) per epoch, as transformers
    counts them (the last, shorter accumulation still steps)."""
    if train.max_steps:
        return train.max_steps
    batches = math.ceil(num_train_rows / (train.batch_size * train.num_processes))
    per_epoch = max(1, math.ceil(batches / train.grad_accum))
    return max(1, math.ceil(train.epochs * per_epoch))


def validate_spec(spec: RunSpec, db: Any = None, local_paths: bool = True) -> list[Problem]:
    """Every problem with the spec in its context (database, model config, data), at once.
    ``local_paths=False`` confines a ``data.path`` to the workspace (specs coming from the UI)."""
    from studio.training.checks import spec_problems

    return spec_problems(spec, db, local_paths)
