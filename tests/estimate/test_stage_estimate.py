"""The estimator accounts for the training stage: a DPO, KTO or reward row puts two sequences
through the trainable forward (chosen + rejected, or a completion + its KL partner)."""
from __future__ import annotations

import pytest

from studio import estimate as est
from studio.estimate.published import lookup_config
from studio.planning import estimate_request
from studio.spec import RunSpec

QWEN7 = lookup_config("qwen2.5-7b")


def spec(stage: str) -> RunSpec:
    return RunSpec.model_validate({"model": "Qwen/Qwen2.5-7B-Instruct", "data": {"dataset_id": 1}, "stage": stage,
                                   "train": {"batch_size": 2, "cutoff_len": 1024, "gradient_checkpointing": False}})


@pytest.mark.parametrize("stage", ["dpo", "kto", "reward"])
def test_preference_stages_need_two_sequences_per_row(stage):
    sft = estimate_request(spec("sft"), QWEN7)
    pref = estimate_request(spec(stage), QWEN7)
    assert (sft.batch_size, pref.batch_size) == (2, 4)
    sft_peak, pref_peak = est.estimate(sft), est.estimate(pref)
    assert pref_peak.total_bytes > sft_peak.total_bytes
    # the weights are the same (the reference is the adapter-disabled base: no second copy)
    assert {k: v for k, v in pref_peak.parts.items() if "weight" in k} == {k: v for k, v in sft_peak.parts.items() if "weight" in k}
