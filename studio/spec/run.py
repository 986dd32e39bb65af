"""The run spec: one typed object that *is* the configuration of a training run.

The UI fills it from widgets, the CLI reads it from YAML, the job writes it (fully resolved) beside
the adapter, and the same YAML runs again headless::

    model: builtin:smollm2-135m-instruct
    data: {dataset_id: 3, eval_fraction: 0.1}
    method: {name: lora, preset: balanced, r: 8}
    train: {epochs: 2, batch_size: 4, grad_accum: 2, cutoff_len: 512}

Field-level problems (types, ranges, unknown keys) come from pydantic; ``studio.spec.checks`` adds
the static problems (ranges that depend on each other, the dataset exists) where the spec is built;
the worker's pre-flight (``studio.training.preflight``) adds those that need the device, the model's
config or every row, on the machine that will train. Every problem is reported at once.

This package is the bottom of the domain: it imports neither torch nor any other studio package.
Methods register themselves (``register_method``) when ``studio.methods`` is imported, so the spec
knows each method's settings class and presets without importing the methods.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidatorFunctionWrapHandler,
                      field_validator, model_validator)

from studio.spec.problems import Problem
from studio.spec.registry import MethodSettings, method_entry, method_names
from studio.spec.stages import StageSettings

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
    gradient_checkpointing: Literal["auto", True, False] = Field(
        "auto", description="recompute activations in backward: less memory, about a third slower. auto: off when the "
                            "run fits the device's memory with margin without it (memory estimate), on otherwise")
    padding_free: bool = Field(True, description="text models: a batch is its rows joined end to end, each with its "
                                                 "own positions, so no compute goes to padding and no token attends "
                                                 "across rows (vision-language batches stay padded)")
    packing: bool = Field(False, description="pack short text rows into cutoff_len blocks without padding (text "
                                             "models on a GPU with FlashAttention 2, which keeps rows apart)")
    logging_steps: int = Field(5, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (None: only at the end)")
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1, description="complete checkpoints kept for resuming")
    num_processes: int = Field(1, ge=1, le=64, description="training processes (GPUs); >1 launches torchrun")
    auto_memory_fix: bool = Field(False, description="if the run runs out of memory, retry it once with the memory "
                                                     "estimator's next fix (gradient checkpointing on, or a smaller "
                                                     "batch with more accumulation: the effective batch is kept)")



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


class RunSpec(_Strict):
    name: str | None = Field(None, max_length=200)
    group: str | None = Field(None, max_length=64, pattern=r"^[\w.-]+$",
                              description="comparison group: the runs one 'compare methods' action started share "
                                          "it (studio.method_compare); nothing else reads it")
    model: str = Field(..., min_length=1, description="a model ref: builtin:..., a Hub id or a local folder")
    trust_remote_code: bool = Field(False, description="run Python code shipped with the model (opt-in)")
    data: DataSpec
    method: SerializeAsAny[MethodSettings] = Field(default_factory=lambda: method_entry("lora").preset())
    train: TrainSettings = Field(default_factory=TrainSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    stage: StageSettings = Field(default_factory=StageSettings)

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_by_name(cls, value: Any) -> Any:
        """``stage: dpo`` is ``{name: dpo}`` with the defaults."""
        return {"name": value} if isinstance(value, str) else value

    @field_validator("method", mode="wrap")
    @classmethod
    def _method_from_preset(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Accept ``method: lora`` or ``{name: lora, preset: light, r: 4}``: a preset, then overrides,
        validated by that method's own settings class (its errors keep their ``method.<field>`` path)."""
        if isinstance(value, MethodSettings):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            return handler(value)
        name = value.get("name")
        if name not in method_names():
            raise ValueError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
        method = method_entry(name)
        value = dict(value)
        preset = value.pop("preset", None) or method.default_preset
        if preset not in method.presets:
            raise ValueError(f"unknown preset {preset!r} for {name}; choose one of {', '.join(method.presets)}")
        return method.settings_cls.model_validate({**method.presets[preset].model_dump(), **value})

    # -- derived ----------------------------------------------------------------------------------
    @property
    def method_name(self) -> str:
        return self.method.name

    def learning_rate(self) -> float:
        return self.train.learning_rate or method_entry(self.method.name).default_learning_rate

    def display_name(self) -> str:
        stage = "" if self.stage.name == "sft" else f"{self.stage.name} "
        return self.name or f"{stage}{self.method.name} on {self.model.split(':')[-1].split('/')[-1]}"

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


def problems_of_validation_error(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        if len(loc) > 1 and loc[0] == "method" and loc[1] in method_names():
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
