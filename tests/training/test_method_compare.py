"""Compare methods (studio.method_compare): one spec becomes one queued run per method, as a group that
differs in the method only; methods whose checks fail for the model or the run are refused with reasons."""
from __future__ import annotations

import pytest

from studio import method_compare as mc
from studio.method_guide import numbers
from studio.methods import METHODS
from studio.spec import RunSpec, SpecError
from studio.training import service as training


def short_spec(model: str, dataset_id: int, **train) -> RunSpec:
    return RunSpec(model=model, name="quick look", data={"dataset_id": dataset_id, "max_rows": 8},
                   method={"name": "lora", "preset": "strong", "r": 32},
                   train={"max_steps": 3, "batch_size": 1, "grad_accum": 1, "cutoff_len": 64, "seed": 7,
                          "learning_rate": 5e-4, **train})


def test_a_group_is_the_same_run_but_for_the_method(db, alpaca_id, smollm2):
    spec = short_spec(smollm2, alpaca_id)
    plan = mc.start_comparison(db, spec, ["lora", "vera", "ia3", "bitfit"])
    assert plan.refused == {} and len(plan.run_ids) == 4
    runs = [training.get_run(db, i) for i in plan.run_ids]
    assert [r.method for r in runs] == ["lora", "vera", "ia3", "bitfit"]
    assert {r.spec["group"] for r in runs} == {plan.group} and plan.group.startswith("cmp-")
    assert [r.id for r in mc.group_runs(db, plan.group)] == plan.run_ids
    for run in runs:
        assert run.status == "queued" and run.name == f"quick look · {METHODS[run.method].label}"
        # the method's default preset (not the form's LoRA r32) and its own recommended learning rate
        assert run.spec["method"] == METHODS[run.method].preset().model_dump(mode="json")
        assert run.spec["train"]["learning_rate"] is None
        assert RunSpec.model_validate(run.spec).learning_rate() == METHODS[run.method].default_learning_rate
    shared = [{k: v for k, v in r.spec.items() if k not in ("method", "name")} for r in runs]
    assert all(s == shared[0] for s in shared)  # model, data, steps, cut-off, batch, seed, group
    assert shared[0]["train"]["max_steps"] == 3 and shared[0]["train"]["seed"] == 7
    assert shared[0]["model"] == smollm2 and shared[0]["data"]["dataset_id"] == alpaca_id
    label, group = mc.groups(db)[0]
    assert group == plan.group and "LoRA, VeRA, IA3" in label


def test_untrained_runs_show_the_estimators_trainable_parameters(db, alpaca_id, smollm2):
    plan = mc.start_comparison(db, short_spec(smollm2, alpaca_id), ["lora", "vera"])
    config = mc.model_facts(training.run_spec(db, plan.run_ids[0])).config
    for r in mc.results(db, plan.run_ids):
        expected = numbers(training.run_spec(db, r.run_id), config, METHODS[r.method]).trainable
        assert r.trainable == expected and not r.trainable_measured and r.status == "queued"
        assert r.final_loss is None and r.adapter_id is None
    lora, vera = mc.results(db, plan.run_ids)
    assert 10 * vera.trainable < lora.trainable
    assert mc.adapter_ids(db, plan.group) == []


def test_a_method_whose_checks_fail_for_the_run_is_refused_with_its_reason(db, alpaca_id, smollm2):
    """AdaLoRA needs warm-up, pruning and final steps: a one-step run cannot hold them."""
    plan = mc.start_comparison(db, short_spec(smollm2, alpaca_id, max_steps=1), ["lora", "adalora", "vera"])
    assert plan.methods == ["lora", "vera"] and len(plan.run_ids) == 2
    (reason,) = plan.refused["adalora"]
    assert reason.field == "method.tinit" and "1 optimizer steps" in reason.message
    assert {training.get_run(db, i).method for i in plan.run_ids} == {"lora", "vera"}


def test_methods_that_cannot_train_a_vision_language_model_are_refused(db, mllm_id, tiny_vl):
    spec = short_spec(tiny_vl, mllm_id)
    plan = mc.plan_comparison(db, spec, ["lora", "prompt_tuning", "ia3", "prefix_tuning"])
    assert plan.methods == ["lora", "ia3"] and set(plan.refused) == {"prompt_tuning", "prefix_tuning"}
    for problems in plan.refused.values():
        assert "vision-language" in problems[0].message and problems[0].hint
    with pytest.raises(SpecError) as refused:  # one method left is no comparison: nothing is queued
        mc.start_comparison(db, spec, ["lora", "prompt_tuning"])
    assert any("Prompt tuning" in p.message for p in refused.value.problems)
    assert "a comparison needs 2" in refused.value.problems[-1].message
    assert training.list_runs(db) == []


def test_a_problem_with_the_shared_settings_queues_nothing(db, smollm2):
    spec = short_spec(smollm2, 999)
    with pytest.raises(SpecError) as refused:
        mc.start_comparison(db, spec, ["lora", "vera"])
    assert [p.field for p in refused.value.problems] == ["data.dataset_id"]  # said once, not once per method
    with pytest.raises(SpecError, match="2 to 6 methods"):
        mc.start_comparison(db, spec, ["lora"])
    with pytest.raises(SpecError, match="unknown method"):
        mc.start_comparison(db, spec, ["lora", "magic"])
    assert training.list_runs(db) == []


def test_cli_compare_queues_a_group_and_says_which_methods_it_left_out(db, settings, alpaca_id, smollm2, tmp_path,
                                                                       capsys):
    from studio.__main__ import main

    (tmp_path / "spec.yaml").write_text(short_spec(smollm2, alpaca_id, max_steps=1).to_yaml())
    assert main(["train", str(tmp_path / "spec.yaml"), "--compare", "lora,adalora,vera", "--check"]) == 0
    out, err = capsys.readouterr()
    assert "ok for lora, vera" in out and "adalora not included: method.tinit" in err
    assert training.list_runs(db) == []
    assert main(["train", str(tmp_path / "spec.yaml"), "--compare", "lora,vera", "--no-follow"]) == 0
    runs = training.list_runs(db)
    assert sorted(r.method for r in runs) == ["lora", "vera"] and len({r.spec["group"] for r in runs}) == 1
    assert f"comparison {runs[0].spec['group']}: run" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "spec.yaml"), "--compare", "lora,prompt_tuning,magic"]) == 2
    assert "unknown method(s) magic" in capsys.readouterr().err
