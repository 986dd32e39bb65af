"""Training stages: what a run optimises. ``sft`` learns the assistant turns of instruction rows;
``dpo`` and ``kto`` move a policy towards preferred answers against a reference (the adapter-
disabled base, or the adapter it starts from: no second copy of the model in memory); ``reward``
trains a scalar reward head on the base + LoRA from preference pairs. All on TRL's trainers
(``studio.training.preference``).

    stage: dpo                                          # the defaults
    stage: {name: dpo, beta: 0.1, loss_type: sigmoid, start_from: "adapter:3"}
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

StageName = Literal["sft", "dpo", "kto", "reward"]
# TRL's DPO losses that need nothing beyond pairs and beta (the others need extra settings or data)
DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"]

# dataset kinds each stage trains on (studio.datasets.preference); KTO takes pairs as one good and
# one bad completion each
STAGE_DATA = {"sft": ("sft",), "dpo": ("preference",), "kto": ("kto", "preference"), "reward": ("preference",)}
STAGE_WORDS = {"sft": "supervised fine-tuning on instruction rows",
               "dpo": "direct preference optimisation on chosen/rejected pairs",
               "kto": "KTO on completions labelled desirable or undesirable",
               "reward": "a reward model (a score head on the base + LoRA) from chosen/rejected pairs"}
START_FROM = re.compile(r"^(adapter|run):(\d+)$")

# Sequences one row puts through the trainable forward and backward: DPO and reward models score the
# chosen and the rejected answer in one batch; KTO pairs each completion with a mismatched one for its
# KL estimate. DPO/KTO also run the reference forward (adapter disabled) on the same batch, under
# no_grad: it keeps no activations for backward, so the training forward bounds the peak.
SEQUENCES_PER_ROW = {"sft": 1, "dpo": 2, "kto": 2, "reward": 2}


class StageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: StageName = Field("sft", description="what the run learns: sft (instruction rows), dpo or kto (preferences "
                                               "against a reference), reward (a reward model)")
    beta: float = Field(0.1, gt=0.0, le=10.0, description="DPO/KTO: how far the policy may move from the reference; "
                                                          "higher stays closer")
    loss_type: DpoLoss = Field("sigmoid", description="DPO loss: sigmoid (the DPO paper), ipo, hinge, robust "
                                                      "(noisy labels), and TRL's other pair losses")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="DPO robust/sigmoid: the share of pairs whose "
                                                                    "labels may be flipped")
    desirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="KTO: weight of desirable completions")
    undesirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="KTO: weight of undesirable completions")
    start_from: str | None = Field(None, max_length=600,
                                   description="DPO/KTO: continue this adapter (adapter:<id>, run:<id> or a folder), "
                                               "usually the SFT adapter; it is also the reference")

    @field_validator("start_from")
    @classmethod
    def _start_from(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None


def start_from_parts(value: str) -> tuple[str, int] | None:
    """``("adapter", 3)`` for ``adapter:3``; None for a folder path."""
    m = START_FROM.match(value)
    return (m.group(1), int(m.group(2))) if m else None
