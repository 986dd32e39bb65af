"""LoRA: low-rank adapters on a frozen base model (Hu et al., 2021), with the DoRA and rsLoRA options.

Defaults follow published practice: rank 16, alpha = 2 x rank, all linear layers (the QLoRA paper
found adapting every linear layer matters more than the rank), learning rate 2e-4 (the usual
LoRA/QLoRA rate; full fine-tuning uses ~10x less), and no dropout: the default of peft's
LoraConfig, LLaMA-Factory and Unsloth. Dropout on the adapter's input keeps a mask (or, on CPU, a
noise tensor) per adapted layer for backward and cost ~15% of a CPU step (bench/profile_training_step.py);
it helps mainly on small datasets trained for many epochs, where the user can set it (the QLoRA paper's
preset keeps its 0.05).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import (Explain, Method, MethodSettings, ModelFacts, Problem, Targets, resolve_targets,
                                 targets_problems)

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "lora"


class LoraSettings(MethodSettings):
    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, le=1024, description="rank of the update matrices")
    alpha: int = Field(32, ge=1, le=4096, description="scaling numerator: the update is scaled by alpha/r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input (0.05-0.1 can help a "
                                                            "small dataset trained for many epochs)")
    targets: Targets = Field(default_factory=Targets)
    use_dora: bool = Field(False, description="DoRA: learn a magnitude per output feature as well (slower, often better)")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha/sqrt(r) so high ranks keep learning")
    init: Literal["default", "pissa", "olora", "loftq"] = Field(
        "default", description="how the adapter starts: default (B = 0, the update starts at zero); pissa (the "
                               "weight's principal singular directions, Meng et al. 2024: converges faster); olora "
                               "(an orthonormal QR basis of the weight, Buyukakyuz 2024); loftq (QLoRA 4-bit only: "
                               "the adapter starts as the low-rank part of the quantisation error, Li et al. 2023; "
                               "needs a CUDA GPU)")


PRESETS: dict[str, LoraSettings] = {
    # The original paper's setting: attention only, small rank. Fewest parameters.
    "light": LoraSettings(r=8, alpha=16, targets=Targets(mode="attention")),
    # The common default of current fine-tuning tools.
    "balanced": LoraSettings(r=16, alpha=32),
    # More capacity for bigger datasets or new skills.
    "strong": LoraSettings(r=64, alpha=128),
    # DoRA at the balanced rank.
    "dora": LoraSettings(r=16, alpha=32, use_dora=True),
    # rsLoRA: scaling alpha/sqrt(r) = 16/8 = 2, like alpha = 2r at plain LoRA, but stable at rank 64.
    "rslora": LoraSettings(r=64, alpha=16, use_rslora=True),
    # PiSSA: starts from the principal components (peft: the adapter is converted to a plain LoRA at save).
    "pissa": LoraSettings(r=16, alpha=16, init="pissa"),
    "olora": LoraSettings(r=16, alpha=16, init="olora"),
}

EXPLAIN = Explain(
    summary="Freezes the model and trains two small matrices beside chosen layers; the result is a "
            "small adapter file (a few MB) that can be switched on and off or merged into the model.",
    memory="The model's weights in 16-bit (2 bytes per parameter) plus activations; the trainable "
           "part is well under 1% of the model. Needs roughly half the memory of full fine-tuning.",
    speed="About as fast as a forward and backward pass of the frozen model. DoRA adds ~10-30%.",
    when="The default choice when the model fits in memory in 16-bit. Pick QLoRA if it does not; "
         "AdaLoRA if you want the rank spread automatically over layers.",
)

DEFAULT_LEARNING_RATE = 2e-4


def lora_problems(s: LoraSettings, prefix: str = "method") -> list[Problem]:
    """Checks shared by LoRA and QLoRA (QLoRA's settings extend LoRA's)."""
    problems = targets_problems(s.targets, prefix)
    if s.init == "loftq" and s.name == "lora":
        problems.append(Problem(f"{prefix}.init", "LoftQ starts the adapter from the error of quantising the base to "
                                "4 bits; LoRA trains on the unquantised base", "choose QLoRA (4-bit) with init loftq, "
                                "or another initialisation"))
    if s.init == "loftq" and (s.alpha != s.r or s.use_rslora):
        problems.append(Problem(f"{prefix}.alpha", f"LoftQ's initialisation (peft) sets B x A to the quantisation "
                                f"error itself, which assumes a scaling of 1; alpha {s.alpha} / r {s.r}"
                                + (" with rsLoRA" if s.use_rslora else "") + " would scale it",
                                "set alpha = r and turn rsLoRA off"))
    if s.init != "default" and s.use_dora:
        problems.append(Problem(f"{prefix}.init", f"{s.init} initialisation cannot be combined with DoRA in peft",
                                "turn DoRA off or use the default initialisation"))
    if s.alpha > 16 * s.r and not s.use_rslora:
        problems.append(Problem(f"{prefix}.alpha", f"alpha {s.alpha} is more than 16 x rank {s.r}; updates will be "
                                "scaled so much that training is likely to diverge", "use alpha = r or 2 x r"))
    return problems


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return lora_problems(spec.method)


def lora_config_kwargs(s: LoraSettings, spec: "RunSpec", model_info: Any) -> dict[str, Any]:
    facts = ModelFacts.of(model_info)
    return dict(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, bias="none", task_type="CAUSAL_LM",
                use_dora=s.use_dora, use_rslora=s.use_rslora, init_lora_weights=INIT[getattr(s, "init", "default")],
                **resolve_targets(s.targets, facts, spec.vision if facts.is_vision else None))


# peft's init_lora_weights: full SVD for PiSSA (deterministic, so a resumed run rebuilds the same residual base;
# the randomised "pissa_niter_N" would not), QR for OLoRA. LoftQ (QLoRA only) starts as a default LoRA on the
# 4-bit model, whose A and B peft's ``replace_lora_weights_loftq`` then sets when training begins (below).
INIT = {"default": True, "pissa": "pissa", "olora": "olora", "loftq": True}
INIT_ADAPTER = "adapter_init"  # the adapter right after PiSSA/OLoRA initialisation, in the run folder


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(**lora_config_kwargs(spec.method, spec, model_info))


# -- PiSSA / OLoRA: they move the principal part of each weight into the adapter, so the base the adapter was
# trained on is not the base on disk. peft converts the trained adapter into a plain LoRA (rank 2r) that works
# on the unmodified base, given the adapter as it was initialised: saved when training begins.
# -- LoftQ (QLoRA): the adapter starts as B0 A0 ~ W - Q (Q: the 4-bit base), so on the unquantised base that chat
# and the merged export use, the trained adapter would add that error twice. The same conversion (B A - B0 A0,
# rank 2r) gives an adapter whose effect on W is the trained model's up to LoftQ's residual W - Q - B0 A0.
def saves_init(spec: "RunSpec") -> bool:
    return getattr(spec.method, "init", "default") != "default"


def callbacks(spec: "RunSpec") -> list[Any]:
    if not saves_init(spec):
        return []
    from transformers import TrainerCallback

    loftq = spec.method.init == "loftq"

    class SaveInitialAdapter(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            folder = Path(args.output_dir).parent / INIT_ADAPTER
            # A fresh start (step 0; a resumed run has loaded its trained adapter by now) gets LoftQ's start on
            # every rank alike (the SVD is deterministic), also when an earlier attempt died before a checkpoint.
            if loftq and state.global_step == 0:
                apply_loftq(model)
            if state.is_world_process_zero and not (folder / "adapter_config.json").exists():
                save_initial_adapter(model, folder)

    return [SaveInitialAdapter()]


def apply_loftq(model: Any) -> None:
    """peft's ``replace_lora_weights_loftq``: each 4-bit layer's LoRA A/B become the rank-r SVD of the
    difference between its unquantised weight (read from the model's safetensors) and its 4-bit weight.
    peft writes fp32 tensors; the adapters keep the dtype the trainer gave them."""
    from peft import replace_lora_weights_loftq

    peft_model = model
    while hasattr(peft_model, "module") and not hasattr(peft_model, "peft_config"):
        peft_model = peft_model.module  # DDP
    dtypes = {n: p.dtype for n, p in peft_model.named_parameters() if p.requires_grad}
    replace_lora_weights_loftq(peft_model, model_path=str(peft_model.get_base_model().config._name_or_path))
    for n, p in peft_model.named_parameters():
        if n in dtypes and p.dtype != dtypes[n]:
            p.data = p.data.to(dtypes[n])


def save_initial_adapter(model: Any, folder: Path) -> None:
    name = model.active_adapter
    config = model.peft_config[name]
    init, config.init_lora_weights = config.init_lora_weights, True  # peft: saved as a plain LoRA start
    try:
        model.save_pretrained(str(folder))
    finally:
        config.init_lora_weights = init


def save_adapter(model: Any, folder: Any, run_dir: Any) -> None:
    init = Path(run_dir) / INIT_ADAPTER
    # LoftQ's peft config reads as a default LoRA: its saved initial adapter says it needs converting
    if not saves_init_model(model) and not (init / "adapter_config.json").exists():
        model.save_pretrained(str(folder))
        return
    if not (init / "adapter_config.json").exists():
        raise RuntimeError(f"{init} is missing: the PiSSA/OLoRA adapter cannot be converted for the original base")
    model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(init))


def saves_init_model(model: Any) -> bool:
    config = model.peft_config[model.active_adapter]
    return config.init_lora_weights in ("pissa", "olora") or str(config.init_lora_weights).startswith("pissa")


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: LoraSettings = spec.method
    # DoRA has its own memory model (magnitude vectors and the weight-norm step)
    return {"method": "dora" if s.use_dora else "lora", "lora_rank": s.r, "lora_dropout": s.dropout,
            "targets": s.targets.estimator_targets()}


METHOD = Method(
    name=NAME,
    label="LoRA",
    settings_cls=LoraSettings,
    presets=PRESETS,
    default_preset="balanced",
    explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE,
    validate=validate,
    build_peft_config=build_peft_config,
    callbacks=callbacks,
    save_adapter=save_adapter,
    estimator_fields=estimator_fields,
)
