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

        return LoraConfig(r=spec.method.r, lora_alpha=2 * spec.method.r, target_modules="all-linear",
                          task_type="CAUSAL_LM")

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
