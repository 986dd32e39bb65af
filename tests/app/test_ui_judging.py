"""Blind A/B judging through the real app (gradio_client + a real worker): judge five prompts,
see the scoreboard, export, and open a DPO run from the judgements."""
from __future__ import annotations

import threading

import pytest

from studio.models import SMOLLM2
from tests.inference.helpers import add_adapter

PROMPTS = ["Name a colour.", "Say hello.", "What is 2+2?", "Name an animal.", "Give me a word."]
# the Chat tab's generation settings, in the order of its controls (ui.tabs.chat.SETTINGS_ROWS)
SETTINGS = ["", 8, 0.0, 1.0, 0, 1.0, 0, 512 * 512]


@pytest.fixture
def worker(db):
    from jobs.worker import Worker, WorkerConfig

    w = Worker(db, WorkerConfig(poll_s=0.1))
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    yield w
    w.stop_event.set()
    thread.join(30)


def test_judge_five_prompts_then_scoreboard_export_and_dpo_spec(db, random_adapter_dir, worker, client):
    adapter_id = add_adapter(db, random_adapter_dir, SMOLLM2, "random-lora")
    adapter = f"adapter:{adapter_id}"
    out = client.predict(SMOLLM2, "base", adapter, "\n".join(PROMPTS), *SETTINGS, api_name="/judge_start")
    status, prompt, a, b, reveal = out
    assert status == "Prompt 1 of 5" and PROMPTS[0] in prompt and a and b and reveal == ""
    picks = ["a", "b", "a", "tie", "both_bad"]
    for i, choice in enumerate(picks):
        status, prompt, a, b, reveal, edited = client.predict("", api_name=f"/judge_pick_{choice}")
        assert f"Prompt {i + 1}: you picked **{choice}**" in reveal and "random-lora" in reveal and "Base model" in reveal
        assert status == (f"Prompt {i + 2} of 5" if i < 4 else "All 5 prompts judged.")
    board = client.predict(api_name="/judge_scoreboard")
    (row,) = board["data"]
    assert row[:4] == [SMOLLM2, "Base model", f"random-lora (#{adapter_id})", 5] and row[6:8] == [1, 1]
    assert row[4] + row[5] == 3
    message = client.predict("judged pairs", api_name="/judge_export_dataset")
    assert message.startswith("Saved as preference dataset #1 judged pairs (3 pairs)") and "1 tie" in message
    message, file = client.predict(api_name="/judge_export_jsonl")
    assert message.startswith("3 pairs written") and file["visible"] is True
    with open(file["value"], encoding="utf-8") as fh:  # the download the browser gets
        assert len(fh.read().splitlines()) == 3
    # (the tab switch is layout: not in the API's outputs)
    message, model, dataset, stage, start_from = client.predict("from the scoreboard", api_name="/train_on_judgements")
    assert message.startswith("DPO on dataset #2 (3 pairs)")
    assert (model, dataset["value"], stage) == (SMOLLM2, 2, "dpo")
    assert [2, 1] == [v for _, v in dataset["choices"]]  # the Train tab's list knows the new dataset
    winner = "base" if row[4] > row[5] else adapter
    assert start_from["value"] == ("" if winner == "base" else adapter)
