"""The Train tab's controls come from the spec's fields and the method table: no bound typed twice."""
from __future__ import annotations

from typing import Literal

import gradio as gr
import pytest
from pydantic import Field

from studio.methods import METHODS
from studio.methods.base import Explain, Method
from studio.spec import LR_MAX, LR_MIN, RunSpec, TrainSettings, method_names
from studio.spec.registry import MethodSettings, _REGISTRY
from ui import spec_widgets
from ui.tabs import train


def test_every_numeric_control_has_its_fields_bounds():
    with gr.Blocks():
        form = train.TrainForm()
        train._method_controls(form)
        train._train_controls(form)
    checked = 0
    for path, component in form.fields.items():
        owner = train.field_owner(path)
        if owner is None or not isinstance(component, (gr.Slider, gr.Number)):
            continue
        low, high = spec_widgets.bounds(owner[0].model_fields[owner[1]])
        if spec_widgets.none_if_zero(*owner):  # 0 shows "not set", so the control allows it
            assert component.value == 0 or low is None or component.value >= low, path
            low = 0
        if path == "train.learning_rate":
            low, high = LR_MIN, LR_MAX
        if low is not None:
            assert component.minimum == low, path
        if high is not None:
            assert component.maximum == high, path
        checked += 1
    assert checked >= 12
    assert form.fields["train.lr_scheduler"].choices[-1][1] == "cosine_with_min_lr"  # every Literal value offered
    assert form.fields["train.cutoff_len"].maximum == TrainSettings.model_fields["cutoff_len"].metadata[1].le


@pytest.fixture
def throwaway_method():
    """A method added through the table alone (one module's worth of code, one registration)."""

    class ToySettings(MethodSettings):
        name: Literal["toy"] = "toy"
        r: int = Field(4, ge=1, le=77, description="rank of the toy adapter")
        spice: float = Field(0.25, ge=0.0, le=1.0, description="how spicy the toy is")

    def build_peft_config(spec, info, total_steps):
        from peft import LoraConfig

        from studio.methods.base import ModelFacts, Targets, resolve_targets

        facts = ModelFacts.of(info)
        return LoraConfig(r=spec.method.r, lora_alpha=2 * spec.method.r, task_type="CAUSAL_LM",
                          **resolve_targets(Targets(), facts, spec.vision if facts.is_vision else None))

    method = Method(name="toy", label="Toy LoRA", settings_cls=ToySettings, presets={"only": ToySettings()},
                    default_preset="only", explain=Explain("a toy", "tiny", "fast", "never"),
                    default_learning_rate=3e-4, validate=lambda spec, steps: [], build_peft_config=build_peft_config,
                    estimator_fields=lambda spec: {"method": "lora", "lora_rank": spec.method.r})
    METHODS["toy"] = method
    yield method
    del METHODS["toy"]
    del _REGISTRY["toy"]


def test_a_method_added_through_the_table_reaches_spec_controls_estimator_and_card(throwaway_method):
    from studio.export.card import CardFacts, _summary
    from studio.planning import estimate_request

    spec = RunSpec.model_validate({"model": "builtin:smollm2-135m-instruct", "data": {"dataset_id": 1},
                                   "method": {"name": "toy", "r": 9}})
    assert "toy" in method_names() and spec.method.r == 9 and spec.learning_rate() == 3e-4
    with pytest.raises(Exception, match="less than or equal to 77"):
        RunSpec.model_validate({"model": "m", "data": {"dataset_id": 1}, "method": {"name": "toy", "r": 78}})
    with gr.Blocks():
        form = train.TrainForm()
        groups = train._method_controls(form)
    assert form.fields["method.spice"].maximum == 1.0 and any("toy" in owners for owners in groups)
    values = {"model": spec.model, "data.dataset_id": 1, "method.name": "toy", "method.r": 9.0, "method.spice": 0.5}
    built, problems = train.spec_from_form(values)
    assert problems == [] and built.method.r == 9 and isinstance(built.method.r, int)
    from studio import estimate as est

    request = estimate_request(spec, est.lookup_config("qwen2.5-7b"))
    assert request.method == "lora" and request.lora_rank == 9
    facts = CardFacts(kind="adapter", model_kind="text", title="t", base_model_ref=spec.model,
                      base_display_name="SmolLM2", method="toy", folder_name="f")
    assert "Toy LoRA" in _summary(facts)


def test_train_tab_memory_view_estimates_for_the_datasets_longest_batch(db):
    """With the dataset's token statistics stored (a finished statistics job), the Train tab shows
    the estimate for the data and the worst case at the cut-off, and which rows would be cut."""
    from storage.models import Dataset, Job, JobStatus

    with db.session() as s:
        s.add(Dataset(id=1, name="short rows", num_rows=100, num_train=100))
        s.add(Job(kind="datasets.stats", payload={"dataset_id": 1}, status=JobStatus.SUCCEEDED,
                  result={"rows": 100, "max_tokens": 300, "mean_tokens": 120, "cutoff_len": 4096,
                          "rows_over_cutoff": 0, "histogram": {"edges": [0, 100, 200, 300], "counts": [40, 50, 10]}}))
    spec = RunSpec.model_validate({"model": "Qwen/Qwen2.5-7B-Instruct", "data": {"dataset_id": 1}, "method": "lora",
                                   "train": {"cutoff_len": 4096, "batch_size": 4, "gradient_checkpointing": False}})
    _, advice, plan = train.memory_view(db, spec, "RTX 4090 24 GB")
    assert "For your data" in advice and "worst case at the cut-off" in advice
    assert plan.estimate.total_bytes < plan.estimate.worst_case_bytes  # rows of 300 tokens, not 4096
    assert plan.estimate.rows_cut == 0


def test_stage_controls_come_from_the_stage_settings_and_fill_the_spec():
    from studio.spec import StageSettings

    with gr.Blocks():
        form = train.TrainForm()
        boxes = train._stage_controls(form)
    assert form.fields["stage.name"].choices == [(c, c) for c in ("sft", "dpo", "kto", "reward")]
    low, high = spec_widgets.bounds(StageSettings.model_fields["beta"])
    assert (form.fields["stage.beta"].minimum, form.fields["stage.beta"].maximum) == (low, high)
    visible = [u["visible"] for u in train.stage_visibility("dpo", boxes)]
    assert visible == [name in ("beta", "loss_type", "label_smoothing", "start_from") for name in boxes]
    assert not any(u["visible"] for u in train.stage_visibility("reward", boxes))
    values = {"model": "builtin:smollm2-135m-instruct", "data.dataset_id": 1, "method.name": "lora",
              "stage.name": "dpo", "stage.beta": 0.25, "stage.loss_type": "ipo", "stage.start_from": "adapter:2",
              "stage.desirable_weight": 1.0}
    built, problems = train.spec_from_form(values)
    assert problems == [] and (built.stage.name, built.stage.beta, built.stage.loss_type) == ("dpo", 0.25, "ipo")
    assert built.stage.start_from == "adapter:2"
    built, _ = train.spec_from_form({**values, "stage.start_from": ""})
    assert built.stage.start_from is None and "stage:\n  name: dpo" in built.to_yaml()


def test_the_trainer_trains_a_method_added_through_the_table(throwaway_method, tiny_vl_small_path, tmp_path,
                                                             monkeypatch):
    import json

    from studio.models import TINY_QWEN_VL_SMALLVOCAB
    from studio.training.recipe import train
    from studio.training.reporting import NullReporter

    monkeypatch.setenv("FTS_TORCH_THREADS", "1")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "text", "text": f"Count to {i}."}]},
        {"role": "assistant", "content": [{"type": "text", "text": " ".join(str(k) for k in range(1, i + 2))}]}]}) + "\n"
        for i in range(4)), encoding="utf-8")
    spec = RunSpec.model_validate({"model": TINY_QWEN_VL_SMALLVOCAB, "data": {"path": str(rows)},
                                   "method": {"name": "toy", "r": 9},
                                   "train": {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "cutoff_len": 64,
                                             "save_steps": 100, "logging_steps": 1, "precision": "fp32"}})
    result = train(spec, tmp_path / "run", NullReporter())
    assert result.status == "completed" and result.global_step == 2
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 9  # the toy method's own setting reached peft through the table
