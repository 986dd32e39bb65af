"""The run spec: typed, YAML round-trip, presets, and every problem reported at once."""
from __future__ import annotations

import json

import pytest

from studio.training.service import check_spec, list_runs, start_run
from studio.spec import RunSpec, SpecError, parse_spec, plan_total_steps
from tests.training.helpers import text_spec, vl_spec


def test_yaml_round_trip_keeps_every_field():
    spec = RunSpec(model="builtin:smollm2-135m-instruct", name="demo", data={"dataset_id": 3, "eval_fraction": 0.1},
                   method={"name": "adalora", "init_r": 16, "target_r": 4, "tinit": 2},
                   train={"epochs": 2, "batch_size": 8, "precision": "bf16", "num_processes": 2},
                   vision={"max_pixels": 28 * 28 * 128, "vision_tower": "lora"})
    again = RunSpec.from_yaml(spec.to_yaml())
    assert again == spec
    assert again.method.name == "adalora" and again.method.init_r == 16


def test_method_preset_then_overrides():
    spec = RunSpec.from_yaml("model: m\ndata: {path: x.jsonl}\nmethod: {name: lora, preset: light, r: 4}\n")
    assert (spec.method.r, spec.method.alpha, spec.method.targets.mode) == (4, 16, "attention")
    assert RunSpec.from_yaml("model: m\ndata: {path: x.jsonl}\nmethod: qlora\n").method.bits == 4
    assert spec.learning_rate() == 2e-4  # the method's recommended rate when none is given


def test_field_problems_are_all_reported_with_their_place():
    spec, problems = parse_spec({"model": "m", "data": {"dataset_id": 0}, "method": {"name": "lora", "r": 0, "rank": 3},
                                 "train": {"batch_size": 0, "precision": "fp8"}})
    assert spec is None
    fields = {p.field for p in problems}
    assert {"data.dataset_id", "method.r", "method.rank", "train.batch_size", "train.precision"} <= fields


def test_total_steps_follow_the_trainer():
    spec = RunSpec(model="m", data={"path": "x"}, train={"epochs": 3, "batch_size": 4, "grad_accum": 2})
    assert plan_total_steps(40, spec.train) == 15  # 10 batches -> 5 steps per epoch
    assert plan_total_steps(41, spec.train) == 18  # 11 batches -> 6 steps (the short accumulation steps too)
    spec.train.max_steps = 7
    assert plan_total_steps(41, spec.train) == 7


def test_bad_spec_is_refused_with_every_problem(db, alpaca_id, mllm_id, smollm2, tiny_vl):
    # unknown dataset, lr out of range, AdaLoRA without enough steps, fp16 on CPU, eval without rows
    bad = text_spec(smollm2, 999, {"name": "adalora", "tinit": 50, "tfinal": 50}, learning_rate=0.5,
                    precision="fp16", max_steps=None, epochs=1)
    _, problems = check_spec(db, bad)
    fields = [p.field for p in problems]
    assert "data.dataset_id" in fields and "train.learning_rate" in fields
    # the device is judged by the worker's pre-flight (here: this machine, which has no CUDA for fp16)
    fixed = {**bad, "method": "lora", "data": {"dataset_id": alpaca_id, "max_rows": 4, "max_eval_rows": 4}}
    fixed["train"] = {**bad["train"], "learning_rate": 1e-3}
    assert "train.precision" in [p.field for p in check_spec(db, fixed, preflight=True)[1]]
    # AdaLoRA schedule impossible in 2 steps of 4 rows: a static problem (the dataset row says how many rows)
    bad = text_spec(smollm2, mllm_id, {"name": "adalora", "tinit": 50, "tfinal": 50}, max_steps=None, epochs=1)
    _, problems = check_spec(db, bad)
    assert "method.tinit" in [p.field for p in problems]
    with pytest.raises(SpecError) as err:
        start_run(db, bad)
    assert len(err.value.problems) == len(problems)
    assert list_runs(db) == []  # nothing was queued
    # image data on a text-only model: the pre-flight reads the rows
    ok_schedule = text_spec(smollm2, mllm_id, "lora")
    assert "text-only model" in " ".join(str(p) for p in check_spec(db, ok_schedule, preflight=True)[1])


def test_cutoff_shorter_than_image_tokens_is_refused(db, mllm_id, tiny_vl):
    spec = vl_spec(tiny_vl, mllm_id, cutoff_len=48, vision={"max_pixels": 28 * 28 * 256})
    _, problems = check_spec(db, spec, preflight=True)
    assert [p.field for p in problems] == ["train.cutoff_len"]
    assert "inside an image" in problems[0].message
    assert check_spec(db, vl_spec(tiny_vl, mllm_id), preflight=True)[1] == []


def test_eval_steps_without_eval_rows_packing_and_vision_settings_on_text_model(db, alpaca_id, smollm2, sample_data, tmp_path):
    rows = [json.loads(line) for line in
            (db.workspace.dataset_dir(alpaca_id) / "train.jsonl").read_text().splitlines()[:4]]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"model": smollm2, "data": {"path": str(path)}, "train": {"eval_steps": 2, "max_steps": 4, "packing": True},
            "vision": {"vision_tower": "lora"}}
    _, problems = check_spec(db, spec, preflight=True)
    assert {p.field for p in problems} == {"train.eval_steps", "vision", "train.packing"}  # no GPU + flash-attn here
    # for specs from a browser, a file outside the workspace is refused (it must not read the server's files)
    assert "data.path" in [p.field for p in check_spec(db, spec, local_paths=False)[1]]


def test_the_worker_judges_the_device_and_its_refusal_lands_on_the_run_row(db, settings, alpaca_id, smollm2):
    """The web process builds and queues the spec (static checks only: it may run on another machine
    kind than the worker); the worker's pre-flight refuses fp16 on a machine without CUDA and the
    run row carries the problem, before any step."""
    from storage.models import JobStatus
    from studio.training.service import get_run, run_metrics
    from tests.processes import start_worker, wait_for

    spec = text_spec(smollm2, alpaca_id, precision="fp16")
    assert check_spec(db, spec)[1] == []  # nothing about the device where the spec is built
    run_id = start_run(db, spec)
    worker = start_worker(settings)
    try:
        run = wait_for(lambda: (r := get_run(db, run_id)).status == JobStatus.FAILED and r, timeout=120)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert [p["field"] for p in run.problems] == ["train.precision"]
    assert "pre-flight" in run.error and "CUDA" in run.error
    assert run_metrics(db, run_id, "train") == []  # refused before step one
