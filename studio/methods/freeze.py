"""Freeze tuning: train the last N decoder blocks completely, keep the rest frozen (the "selective"
family; LLaMA-Factory's "freeze" method).

Built on peft's LN-tuning tuner, which wraps any module in a trainable copy: targeted at whole
decoder blocks it trains exactly those blocks, saves them as an adapter, switches off for a
side-by-side chat, and merges by putting the trained copies in place.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import Explain, Method, MethodSettings, ModelFacts, Problem, blocks_regex

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "freeze"


class FreezeSettings(MethodSettings):
    name: Literal["freeze"] = "freeze"
    last_blocks: int = Field(2, ge=1, le=512, description="how many of the last decoder blocks train")
    final_norm: bool = Field(True, description="also train the final norm after the last block")


PRESETS: dict[str, FreezeSettings] = {
    "last-2": FreezeSettings(),
    "last-4": FreezeSettings(last_blocks=4),
    "last-8": FreezeSettings(last_blocks=8),
}

EXPLAIN = Explain(
    summary="Trains the last few decoder blocks completely and freezes everything below them: the model's "
            "general features stay, its top layers adapt.",
    memory="The model, plus a trained copy of the chosen blocks with gradients and optimizer state "
           "(~16 bytes per trained parameter): between LoRA and full fine-tuning.",
    speed="Fast: backward stops at the first trained block.",
    when="A mid-size dataset where LoRA underfits but full fine-tuning does not fit; the adapter is as "
         "large as the blocks it trains. Merges.",
)

# Full-weight training wants full fine-tuning's rates, ~10x below LoRA (LLaMA-Factory's freeze examples: 1e-5..5e-5).
DEFAULT_LEARNING_RATE = 2e-5


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return []


def model_problems(spec: "RunSpec", facts: ModelFacts) -> list[Problem]:
    layers = facts.num_layers
    if layers and spec.method.last_blocks > layers:
        return [Problem("method.last_blocks", f"{spec.model} has {layers} decoder blocks, fewer than the "
                        f"{spec.method.last_blocks} asked for", f"use at most {layers} (all of them is full fine-tuning)")]
    return []


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import LNTuningConfig

    s: FreezeSettings = spec.method
    layers = ModelFacts.of(model_info).num_layers
    if not layers:
        raise ValueError("freeze tuning needs the model's num_hidden_layers (config.json)")
    first = max(0, layers - s.last_blocks)
    return LNTuningConfig(task_type="CAUSAL_LM",
                          target_modules=blocks_regex(first, layers - 1, ("norm",) if s.final_norm else ()))


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    s: FreezeSettings = spec.method
    return {"method": "blocks", "train_blocks": s.last_blocks, "train_final_norm": s.final_norm}


METHOD = Method(
    name=NAME, label="Freeze tuning (last blocks)", settings_cls=FreezeSettings, presets=PRESETS,
    default_preset="last-2", explain=EXPLAIN, default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate,
    build_peft_config=build_peft_config, model_problems=model_problems, estimator_fields=estimator_fields,
    family="selective",
    merge_note="The trained blocks replace the base model's blocks in the merged weights.",
)


# -- unloading: peft's LN-tuning unload assigns ``weight`` to the module it puts back, which a decoder block
# does not have (peft 0.21: AttributeError). Freeze and full fine-tuning wrap whole blocks, so the export's
# merge and the chat engine's detach put the modules back themselves.
def wraps_whole_modules(peft_model: Any) -> bool:
    return str(getattr(peft_model, "peft_type", "")) in ("LN_TUNING", "PeftType.LN_TUNING")


def unload_whole_modules(peft_model: Any, merge: bool) -> Any:
    """The base model with every LN-tuning wrapper replaced by the trained copy (``merge``) or by the
    original module; peft's bookkeeping is removed, as ``merge_and_unload`` / ``unload`` would."""
    from peft.tuners.ln_tuning.layer import LNTuningLayer

    model = peft_model.get_base_model()
    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, LNTuningLayer)]
    for name, wrapper in wrapped:
        if merge:
            wrapper.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapper.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model
