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

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

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


# -- the trainer's hooks: regulariser and resumable checkpoints ------------------------------------
# peft saves an AdaLoRA adapter already cut down to its current ranks, and loading it resizes the
# layers; a checkpoint saved that way cannot be resumed (the full-rank model and its optimizer state
# no longer match). Checkpoints therefore also hold the full-rank trainable tensors, the rank
# pattern and the allocator's importance statistics, and resuming restores exactly those.
ADALORA_STATE = "adalora_state.safetensors"  # tensors; the rank pattern goes in its metadata


def extra_loss(model: Any, spec: "RunSpec") -> Any:
    reg = adalora_orth_regulariser(model)
    return None if reg is None else spec.method.orth_reg_weight * reg


def save_state(model: Any, folder: Any) -> None:
    save_adalora_state(unwrap(model), Path(folder) / ADALORA_STATE)


def restore_state(model: Any, folder: Any) -> bool:
    path = Path(folder) / ADALORA_STATE
    if not path.exists():
        return False
    restore_adalora_state(unwrap(model), load_adalora_state(path))
    return True


def adalora_orth_regulariser(model: Any) -> Any:
    """peft's AdaLoRA orthogonality penalty, mean over adapted matrices of ||P P^T - I||_F.
    peft adds it to ``outputs.loss`` inside its forward, but TRL's SFTTrainer computes the loss
    from per-token log-probabilities and never reads ``outputs.loss``: the trainer adds it here."""
    import torch

    peft_model = unwrap(model)
    name = peft_model.base_model.trainable_adapter_name
    terms = []
    for n, p in peft_model.named_parameters():
        if p.requires_grad and (f"lora_A.{name}" in n or f"lora_B.{name}" in n):
            cov = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
            terms.append(torch.norm(cov - eye, p="fro"))
    return torch.stack(terms).mean() if terms else None


def _state(peft_model) -> dict:
    allocator = peft_model.base_model.rankallocator
    name = peft_model.base_model.trainable_adapter_name
    return {
        "params": {n: p.detach().cpu().clone() for n, p in peft_model.named_parameters() if p.requires_grad},
        "rank_pattern": peft_model.peft_config[name].rank_pattern,
        "allocator": {k: {n: t.detach().cpu().clone() for n, t in getattr(allocator, k).items()}
                      for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")},
    }


def save_adalora_state(peft_model, path: Path) -> None:
    """Safetensors (no pickle): ``params/<name>`` and ``<allocator field>/<name>`` tensors, and the
    rank pattern as JSON metadata."""
    import json

    from safetensors.torch import save_file

    state = _state(peft_model)
    tensors = {f"params/{n}": t for n, t in state["params"].items()}
    for field, values in state["allocator"].items():
        tensors.update({f"{field}/{n}": t.contiguous() for n, t in values.items()})
    save_file(tensors, str(path), metadata={"rank_pattern": json.dumps(state["rank_pattern"])})


def load_adalora_state(path: Path) -> dict:
    import json

    from safetensors import safe_open

    state: dict = {"params": {}, "allocator": {}}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state["rank_pattern"] = json.loads(f.metadata()["rank_pattern"])
        for key in f.keys():
            group, _, name = key.partition("/")
            target = state["params"] if group == "params" else state["allocator"].setdefault(group, {})
            target[name] = f.get_tensor(key)
    return state


def restore_adalora_state(peft_model, state: dict) -> None:
    import torch

    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, value in state["params"].items():
            params[n].copy_(value.to(params[n].device, params[n].dtype))
    name = peft_model.base_model.trainable_adapter_name
    peft_model.peft_config[name].rank_pattern = state["rank_pattern"]
    allocator = peft_model.base_model.rankallocator
    device = next(iter(params.values())).device
    for k, values in state["allocator"].items():
        setattr(allocator, k, {n: t.to(device) for n, t in values.items()})


def unwrap(model: Any) -> Any:
    while hasattr(model, "module") and not hasattr(model, "base_model"):
        model = model.module  # DDP
    return model


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: AdaLoraSettings = spec.method
    return {"method": NAME, "lora_rank": s.target_r, "adalora_init_rank": s.init_r, "lora_dropout": s.dropout,
            "targets": s.targets.estimator_targets()}


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
    extra_loss=extra_loss,
    save_state=save_state,
    restore_state=restore_state,
    estimator_fields=estimator_fields,
)
