"""IA3: learned vectors that rescale keys, values and the feed-forward activations (Liu et al., 2022, "Few-Shot
Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning", the T-Few recipe).

Each adapted layer gets one vector: an output scale on keys and values, an input scale on the MLP's
down projection (the feed-forward activation). Fewer parameters than LoRA r1; merges into the weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from studio.methods.base import Explain, Method, MethodSettings, ModelFacts, Problem, vision_exclusion

if TYPE_CHECKING:
    from studio.spec import RunSpec

NAME = "ia3"
# The paper's placement (peft's default for Llama-style models): k, v and the feed-forward down projection.
KV_FFN = (["k_proj", "v_proj", "down_proj"], ["down_proj"])
ALL_LINEAR = (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], ["down_proj"])


class IA3Settings(MethodSettings):
    name: Literal["ia3"] = "ia3"
    placement: Literal["kv-ffn", "all-linear"] = Field(
        "kv-ffn", description="kv-ffn: keys, values and the feed-forward activation (the paper); all-linear: "
                              "every linear layer of the blocks")


PRESETS: dict[str, IA3Settings] = {
    "paper": IA3Settings(),
    "all-linear": IA3Settings(placement="all-linear"),
}

EXPLAIN = Explain(
    summary="Learns one scaling vector per adapted layer (keys, values, feed-forward activation): the "
            "model's own activations are rescaled, nothing new is added to the forward pass.",
    memory="Almost only the frozen model: the vectors are ~0.05% of the parameters.",
    speed="As fast as LoRA or slightly faster; merges into the weights for inference.",
    when="Very small data (a few hundred rows) or many tasks on one base: tiny files, little overfitting. "
         "Learns less than LoRA on large datasets.",
)

# T-Few (Liu et al., 2022, Sec. 3.3) trained IA3 with learning rate 3e-3.
DEFAULT_LEARNING_RATE = 3e-3


def validate(spec: "RunSpec", total_steps: int | None = None) -> list[Problem]:
    return []


def modules(s: IA3Settings) -> tuple[list[str], list[str]]:
    return KV_FFN if s.placement == "kv-ffn" else ALL_LINEAR


def build_peft_config(spec: "RunSpec", model_info: Any, total_steps: int) -> Any:
    from peft import IA3Config

    facts = ModelFacts.of(model_info)
    targets, feedforward = modules(spec.method)
    return IA3Config(task_type="CAUSAL_LM", target_modules=list(targets), feedforward_modules=list(feedforward),
                     exclude_modules=vision_exclusion(spec.vision) if facts.is_vision else None)


def estimator_fields(spec: "RunSpec") -> dict[str, Any]:
    targets, feedforward = modules(spec.method)
    return {"method": NAME, "targets": tuple(targets), "feedforward": tuple(feedforward)}


METHOD = Method(
    name=NAME, label="IA3", settings_cls=IA3Settings, presets=PRESETS, default_preset="paper", explain=EXPLAIN,
    default_learning_rate=DEFAULT_LEARNING_RATE, validate=validate, build_peft_config=build_peft_config,
    estimator_fields=estimator_fields, family="additive",
)
