"""AdaLoRA: LoRA whose rank budget is re-allocated during training (Zhang et al., 2023).

Each adapted layer starts at ``init_r``; after ``tinit`` warm-up steps the least important
singular triplets are pruned every ``deltaT`` steps until the average rank reaches ``target_r``;
the last ``tfinal`` steps train with the final ranks. That schedule needs the run's total number
of optimizer steps (``total_step``) and a call to ``update_and_allocate(step)`` after every
optimizer step, before gradients are cleared. Without that call peft trains silently as plain
LoRA, so the trainer attaches ``AdaLoraAllocatorCallback`` (``callbacks`` below) and adds the
orthogonality regulariser to the loss itself (TRL's SFTTrainer computes its own loss and would
drop the one peft adds to ``outputs.loss``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.training.spec import RunSpec

NAME = "adalora"
# When tinit/tfinal are not given: 10% warm-up, 20% final phase (the paper's schedules spend
# roughly the first tenth warming up and the last fifth to a third fine-tuning with fixed ranks).
AUTO_TINIT_FRACTION = 0.1
AUTO_TFINAL_FRACTION = 0.2
MIN_BUDGET_STEPS = 2


class AdaLoraSettings(MethodSettings):
    name: Literal["adalora"] = "adalora"
    init_r: int = Field(12, ge=1, le=1024, description="starting rank of every adapted layer")
    target_r: int = Field(8, ge=1, le=1024, description="average rank after pruning")
    alpha: int = Field(32, ge=1, le=4096, description="scaling numerator (divided by the current rank)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    targets: Targets = Field(default_factory=Targets)
    tinit: int | None = Field(None, ge=0, description="warm-up steps before pruning starts (None: 10% of the run)")
    tfinal: int | None = Field(None, ge=0, description="final steps with fixed ranks (None: 20% of the run)")
    deltaT: int = Field(1, ge=1, description="steps between two budget allocations")
    beta1: float = Field(0.85, gt=0.0, lt=1.0, description="EMA factor of the sensitivity")
    beta2: float = Field(0.85, gt=0.0, lt=1.0, description="EMA factor of the uncertainty")
    orth_reg_weight: float = Field(0.5, ge=0.0, description="weight of the orthogonality regulariser")


PRESETS: dict[str, AdaLoraSettings] = {
    # peft's defaults: prune from 12 to an average of 8.
    "balanced": AdaLoraSettings(),
    # Larger starting budget, pruned harder: more room for the allocator to choose.
    "wide": AdaLoraSettings(init_r=24, target_r=8, alpha=48),
}

EXPLAIN = Explain(
    summary="LoRA that starts with a larger rank everywhere and moves it to the layers that matter "
            "most while training, ending at a smaller average rank.",
    memory="Like LoRA at the starting rank (init_r), plus importance statistics of the same size.",
    speed="Somewhat slower than LoRA: it scores every rank component after each step.",
    when="You are unsure which layers need capacity and the run is long enough (dozens of steps at "
         "least) for a warm-up, a pruning phase and a final phase.",
)

DEFAULT_LEARNING_RATE = 2e-4


def schedule(s: AdaLoraSettings, total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal) in optimizer steps, resolving the automatic values from the run length."""
    tinit = s.tinit if s.tinit is not None else int(total_steps * AUTO_TINIT_FRACTION)
    tfinal = s.tfinal if s.tfinal is not None else int(total_steps * AUTO_TFINAL_FRACTION)
    return tinit, tfinal


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    s: AdaLoraSettings = spec.method
    problems = targets_problems(s.targets, "method")
    if s.target_r > s.init_r:
        problems.append(Problem("method.target_r", f"target_r {s.target_r} is larger than init_r {s.init_r}; "
                                "AdaLoRA only prunes", "set target_r <= init_r"))
    if total_steps is not None:
        tinit, tfinal = schedule(s, total_steps)
        budget = total_steps - tinit - tfinal
        if budget < MIN_BUDGET_STEPS:
            problems.append(Problem(
                "method.tinit", f"the run has {total_steps} optimizer steps, too few for tinit={tinit} warm-up + "
                f"tfinal={tfinal} final steps + at least {MIN_BUDGET_STEPS} pruning steps",
                "train for more steps/epochs, lower tinit/tfinal, or choose LoRA"))
        elif s.deltaT > budget:
            problems.append(Problem("method.deltaT", f"deltaT={s.deltaT} is longer than the pruning phase "
                                    f"({budget} steps): ranks would never change", f"use deltaT <= {budget}"))
    return problems


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import AdaLoraConfig

    s: AdaLoraSettings = spec.method
    facts = ModelFacts.of(model_info)
    tinit, tfinal = schedule(s, total_steps)
    return AdaLoraConfig(init_r=s.init_r, target_r=s.target_r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                         tinit=tinit, tfinal=tfinal, deltaT=s.deltaT, beta1=s.beta1, beta2=s.beta2,
                         orth_reg_weight=s.orth_reg_weight, total_step=total_steps, task_type="CAUSAL_LM",
                         **resolve_targets(s.targets, facts, spec.vision if facts.is_vision else None))


def callbacks(spec: "RunSpec") -> list[Any]:
    from studio.training.callbacks import AdaLoraAllocatorCallback

    return [AdaLoraAllocatorCallback()]


METHOD = Method(
    name=NAME,
    label="AdaLoRA",
    settings_cls=AdaLoraSettings,
    presets=PRESETS,
    default_preset="balanced",
    explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE,
    validate=validate,
    build_peft_config=build_peft_config,
    callbacks=callbacks,
)
