"""Real training of the tiny Qwen2.5-VL (small vocabulary) on the real image-text demo data."""
from __future__ import annotations

import json
from statistics import mean

import pytest
from safetensors import safe_open

from jobs.worker import run_inline
from storage.models import JobStatus
from studio.methods import METHODS
from studio.training.service import get_run, run_metrics, start_run
from tests.training.helpers import vl_spec


def train_inline(db, spec: dict):
    run_id = start_run(db, spec)
    outcome = run_inline(db, get_run(db, run_id).job_id)
    assert outcome.status == JobStatus.SUCCEEDED, outcome.error
    return get_run(db, run_id), outcome.result


def adapter_tensors(db, run_id: int) -> list[str]:
    with safe_open(str(db.workspace.run_dir(run_id) / "adapter" / "adapter_model.safetensors"), "pt") as f:
        return list(f.keys())


# precision: "auto" is what a user gets (bf16 on AMX CPUs, fp32 on AVX2-only ones); fp32 is also run
# everywhere, so the AVX2 machines' setting is exercised on every machine kind.
# The first three methods run in both precisions; the others (same machinery, other peft tuners) in the one a
# user gets, to keep the file's time in bounds.
BOTH_PRECISIONS = ("lora", "qlora", "adalora")
VL_METHODS = [(m, p) for m in METHODS if METHODS[m].vision for p in (("auto", "fp32") if m in BOTH_PRECISIONS else ("auto",))]
# Whole-weight methods move far at 1e-2 on the random test model; the vector methods need it.
VL_LR = {"full": 1e-3, "freeze": 1e-3}
# Scaling vectors (VeRA's, IA3's) rescale what the random-weight test model already computes: in 12 steps at the
# highest allowed rate its loss falls by ~0.06-0.08 (measured), not the 0.3 the other methods reach.
# AdaLoRA's logged loss is the LM loss alone (its orthogonality penalty is logged apart) and its singular values
# start at zero: measured 7.94 -> 7.68 here, auto and fp32 alike.
VL_MIN_DROP = {"vera": 0.03, "ia3": 0.03, "adalora": 0.12}


@pytest.mark.parametrize("method, precision", VL_METHODS)
def test_every_method_trains_the_vision_language_model_on_images(db, mllm_id, tiny_vl, method, precision):
    settings = {"name": method} if method != "adalora" else {"name": method, "tinit": 1, "tfinal": 2}
    run, result = train_inline(db, vl_spec(tiny_vl, mllm_id, settings, learning_rate=VL_LR.get(method, 1e-2),
                                           precision=precision))
    assert run.status == "succeeded"
    assert result["data"]["train"]["kept"] == 6 and result["data"]["train"]["dropped_image_cut"] == 0
    losses = [m.loss for m in run_metrics(db, run.id, "train") if m.loss is not None]
    # first and last three steps each see all six rows once; the test model can fall by ~1.0 here
    assert mean(losses[-3:]) < mean(losses[:3]) - VL_MIN_DROP.get(method, 0.3), losses
    names = adapter_tensors(db, run.id)
    assert any("language_model" in n for n in names)
    assert not any("visual" in n for n in names)  # the vision tower and projector stayed frozen
    if method == "qlora":
        assert result["model"]["quantization"] == "4-bit"
    if method == "adalora":
        config = json.loads((db.workspace.run_dir(run.id) / "adapter" / "adapter_config.json").read_text())
        ranks = [sum(mask) for mask in config["rank_pattern"].values()]
        assert ranks and sum(ranks) < config["init_r"] * len(ranks)


def test_methods_the_table_marks_text_only_are_refused_for_the_vision_language_model(db, mllm_id, tiny_vl):
    from studio.training.preflight import method_model_problems
    from studio.models import inspect
    from studio.spec import RunSpec

    text_only = [m for m in METHODS.values() if not m.vision]
    assert {m.name for m in text_only} == {"prompt_tuning", "prefix_tuning", "p_tuning", "boft"}
    for m in text_only:
        spec = RunSpec.model_validate(vl_spec(tiny_vl, mllm_id, m.name))
        problems = method_model_problems(spec, inspect(tiny_vl))
        assert [p.field for p in problems] == ["method.name"] and "vision-language" in problems[0].message


def test_vision_tower_lora_and_full_projector_train_too(db, mllm_id, tiny_vl):
    # with gradient checkpointing and accumulation, the memory savers a real run turns on
    spec = vl_spec(tiny_vl, mllm_id, "lora", vision={"vision_tower": "lora", "projector": "full"}, max_steps=4,
                   gradient_checkpointing=True, grad_accum=2)
    run, _ = train_inline(db, spec)
    names = adapter_tensors(db, run.id)
    assert any("visual.blocks" in n and "lora_A" in n for n in names)
    assert any("visual.merger" in n and "lora" not in n for n in names)  # the projector saved whole
