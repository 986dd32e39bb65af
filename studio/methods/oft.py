"""OFT (Qiu et al., 2023, "Controlling Text-to-Image Diffusion by Orthogonal Finetuning"): each adapted
layer's weight is multiplied by a learned block-diagonal orthogonal matrix. Rotating the neurons keeps
their pairwise angles (the "hyperspherical energy"), which preserves what the model knew. Merges."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "oft"


class OFTSettings(MethodSettings):
    name: Literal["oft"] = "oft"
    block_size: int = Field(32, ge=2, le=4096, description="size of each orthogonal block; must divide the input "
                                                           "size of every adapted layer")
    coft: bool = Field(False, description="constrained OFT: keep the rotation within eps of the identity")
    eps: float = Field(6e-5, gt=0.0, le=1.0, description="COFT's bound")
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="multiplicative dropout on the blocks")
    targets: Targets = Field(default_factory=Targets)


PRESETS: dict[str, OFTSettings] = {
    "balanced": OFTSettings(),  # peft's default block size
    "attention": OFTSettings(targets=Targets(mode="attention")),
}

EXPLAIN = Explain(
    summary="Multiplies each adapted weight by a learned orthogonal (rotation) matrix made of small "
            "blocks, so neurons turn together and keep their relations: forgets less than additive updates.",
    memory="The frozen model plus the blocks' parameters (about block_size/2 per input feature per layer).",
    speed="Slower than LoRA: the rotation is rebuilt from its parameters (Cayley transform) each step.",
    when="You want to change behaviour while keeping the base model's knowledge intact; good for small "
         "data. Needs layer sizes divisible by the block size.",
)

# peft's OFT docs give no rate; the method updates a rotation, so the LoRA range is the studio's starting point.
DEFAULT_LEARNING_RATE = 1e-4


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return targets_problems(spec.method.targets, "method")


def model_problems(spec: "RunSpec", facts: ModelFacts) -> list[Problem]:
    """Every adapted layer's input size must be a multiple of the block size (peft refuses otherwise)."""
    cfg = facts.text_config
    sizes = {n: int(cfg[k]) for n, k in (("hidden_size", "hidden_size"), ("intermediate_size", "intermediate_size"))
             if cfg.get(k)}
    bad = {n: v for n, v in sizes.items() if v % spec.method.block_size}
    if not bad:
        return []
    return [Problem("method.block_size", f"block size {spec.method.block_size} does not divide the model's "
                    + ", ".join(f"{n} {v}" for n, v in bad.items()),
                    "choose a block size that divides them (e.g. 16 or 32)")]


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import OFTConfig

    s: OFTSettings = spec.method
    facts = ModelFacts.of(model_info)
    targets = resolve_targets(s.targets, facts, spec.vision if facts.is_vision else None)
    return OFTConfig(task_type="CAUSAL_LM", r=0, oft_block_size=s.block_size, coft=s.coft, eps=s.eps,
                     module_dropout=s.module_dropout, target_modules=targets["target_modules"],
                     exclude_modules=targets["exclude_modules"], modules_to_save=targets["modules_to_save"])


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: OFTSettings = spec.method
    return {"method": NAME, "oft_block_size": s.block_size, "targets": s.targets.estimator_targets()}


METHOD = Method(
    name=NAME, label="OFT", settings_cls=OFTSettings, presets=PRESETS, default_preset="balanced", explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate, build_peft_config=build_peft_config,
    model_problems=model_problems, estimator_fields=estimator_fields,
)
