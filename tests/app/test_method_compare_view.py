"""The Runs tab's compare view of a comparison of methods, through the served app (gradio_client): two
methods trained for real (SmolLM2, three steps each), then their curves, figures and adapters."""
from __future__ import annotations

import pytest

from jobs.worker import run_inline
from studio import method_compare
from studio.spec import RunSpec
from studio.training import history
from studio.training import service as training
from ui.tabs import train_compare


@pytest.fixture
def trained_group(db, smollm2_path, sample_data, monkeypatch):
    """A LoRA and a VeRA run of the same three steps, trained in this process."""
    from studio.datasets import ImportOptions, import_dataset

    monkeypatch.setenv("FTS_TORCH_THREADS", "1")
    src = db.workspace.uploads_dir / "alpaca_en_demo.json"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes((sample_data / "alpaca_en_demo.json").read_bytes())
    dataset_id = import_dataset(db, src, ImportOptions(limit=8, seed=1)).dataset.id
    spec = RunSpec(model="builtin:smollm2-135m-instruct", data={"dataset_id": dataset_id, "max_rows": 4},
                   train={"max_steps": 3, "batch_size": 1, "grad_accum": 1, "cutoff_len": 48, "logging_steps": 1,
                          "save_steps": 100})
    plan = method_compare.start_comparison(db, spec, ["lora", "vera"])
    for run_id in plan.run_ids:
        run_inline(db, training.get_run(db, run_id).job_id)
    assert [training.get_run(db, i).status for i in plan.run_ids] == ["succeeded", "succeeded"]
    return plan


def test_compare_view_shows_each_method_s_curve_figures_and_adapters(db, trained_group, client):
    ids = trained_group.run_ids
    plot, table, diff = client.predict(ids, api_name="/compare_runs")
    rows = {r[1]: r for r in table["data"]}
    assert table["headers"] == ["Run", "Method", "Status", "Trainable", "Tokens/s", "Peak memory", "Final loss"]
    assert set(rows) == {"LoRA", "VeRA"}
    figures = {r.method: r for r in method_compare.results(db, ids)}
    for label, method in (("LoRA", "lora"), ("VeRA", "vera")):
        row, r = rows[label], figures[method]
        assert row[0].endswith(f"━━</span> #{r.run_id}") and row[2] == "succeeded"  # the curve's colour, the id
        assert r.trainable_measured and "est." not in row[3]  # peft's count, from the finished run
        assert float(row[4]) > 0 and row[5].endswith("GiB") and float(row[6]) == pytest.approx(r.final_loss, abs=1e-4)
    assert 10 * figures["vera"].trainable < figures["lora"].trainable
    assert history.loss_colours(ids)[f"#{ids[1]} train"] in rows["VeRA"][0]
    # one plot, a smoothed training curve per run, each with all its steps
    points = [dict(zip(plot["value"]["columns"], p)) for p in plot["value"]["data"]]
    for run_id in ids:
        steps = sorted(p["step"] for p in points if p["series"] == f"#{run_id} train" and p["loss"] is not None)
        assert steps == [1, 2, 3]
    # the same rows in the same order (seed): one warm-up step at learning rate 0, then the methods part
    assert figures["lora"].final_loss != figures["vera"].final_loss
    # the settings that differ: the method (and the name), nothing else the runs were started with
    fields = {r[0] for r in diff["data"]}
    assert "method.name" in fields and not {f for f in fields if f.startswith(("train.", "data.", "model"))}

    # the group as the compare view lists it; "chat with these adapters" opens both beside the base
    (label, group), = method_compare.groups(db)
    assert group == trained_group.group and "LoRA, VeRA" in label
    adapters = method_compare.adapter_ids(db, group)
    assert len(adapters) == 2
    # (the Tabs switch and the chat id, a State, are not outputs the client sees)
    base, chosen, *panes = client.predict(trained_group.run_ids, api_name="/chat_with_compared_runs")
    assert base == "builtin:smollm2-135m-instruct" and chosen["value"] == adapters
    assert [p["visible"] for p in panes] == [True, True, True, False]  # the base and one pane per adapter
    assert "VeRA" in panes[2]["label"] and "LoRA" in panes[1]["label"]


def test_train_tab_compare_message_lists_queued_and_refused_methods(db, smollm2_path, sample_data):
    from studio.datasets import ImportOptions, import_dataset

    src = db.workspace.uploads_dir / "alpaca_en_demo.json"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes((sample_data / "alpaca_en_demo.json").read_bytes())
    dataset_id = import_dataset(db, src, ImportOptions(limit=8, seed=1)).dataset.id
    values = {"model": "builtin:smollm2-135m-instruct", "data.dataset_id": dataset_id, "method.name": "lora",
              "train.max_steps": 1}
    text, group = train_compare.start(db, values, ["lora", "adalora", "ia3"])
    assert group and f"Comparison {group} queued" in text and "LoRA" in text and "IA3" in text
    assert "Not included: **AdaLoRA**" in text and "optimizer steps" in text
    text, group = train_compare.start(db, values, ["lora"])
    assert group is None and "Not started" in text and "2 to 6 methods" in text
