"""Preference data in the Datasets tab: a pair's answers side by side, a KTO completion on its label's side."""
from __future__ import annotations

import json

from tests.app.test_ui_datasets import import_args


def texts(chat):
    """Gradio 6 sends content back as a list of parts."""
    def text(content):
        return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return [text(m["content"]) for m in chat]


def test_pair_preview_shows_chosen_and_rejected_side_by_side(db, client, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}) + "\n"
                             for i in range(3)), encoding="utf-8")
    message, _, table, _ = client.predict(*import_args(pairs, val_fraction=0), api_name="/import_dataset")
    assert message.startswith("**Imported #1") and table["data"][0][2:4] == ["preference", "preference"]
    prompt = client.predict(1, 1, api_name="/preview_row")
    assert texts(prompt) == ["Q1?"]
    chosen, rejected = client.predict(1, 1, api_name="/preview_answers_row")  # (the pane group is layout only)
    assert (texts(chosen), texts(rejected)) == (["good 1"], ["bad 1"])


def test_kto_completion_sits_on_its_labels_side_and_sft_rows_leave_the_panes_empty(db, client, tmp_path, sample_data):
    kto = tmp_path / "kto.jsonl"
    kto.write_text(json.dumps({"prompt": "Q?", "completion": "meh", "label": False}) + "\n", encoding="utf-8")
    client.predict(*import_args(kto, val_fraction=0), api_name="/import_dataset")
    chosen, rejected = client.predict(1, 0, api_name="/preview_answers_row")
    assert (texts(chosen), texts(rejected)) == ([], ["meh"])
    client.predict(*import_args(sample_data / "identity.json", val_fraction=0), api_name="/import_dataset")
    assert client.predict(2, 0, api_name="/preview_answers_row") == ([], [])


def test_runs_view_shows_the_reward_figures_of_a_preference_run(db):
    from storage.models import Run, RunMetric
    from ui.tabs import runs

    with db.session() as s:
        run = Run(name="dpo lora", model_ref="builtin:smollm2-135m-instruct", method="lora", status="running",
                  spec={"stage": {"name": "dpo"}})
        s.add(run)
        s.flush()
        s.add(RunMetric(run_id=run.id, stage="train", step=3, total_steps=5, loss=0.41, reward_accuracy=0.75,
                        reward_margin=0.612, logps_chosen=-20.4, logps_rejected=-31.0))
        run_id = run.id
    view = runs.status_html(db, run_id)
    assert "reward accuracy 75%" in view and "margin 0.612" in view and "log-p rejected -31.0" in view
