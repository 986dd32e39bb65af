"""Blind A/B judging on the real SmolLM2: five prompts answered by the base and an adapter, shown
as A/B in a hidden random order, judged, revealed, scored (Wilson interval), exported as a
preference dataset that a DPO run can start from."""
from __future__ import annotations

import json

import pytest

from studio.datasets.service import dataset_kind, read_canonical
from studio.inference import judging, service
from studio.inference.errors import ChatError
from studio.models import SMOLLM2
from studio.spec import RunSpec
from studio.spec.checks import static_problems
from tests.inference.helpers import add_adapter, answer

PROMPTS = ["Name a colour.", "Say hello.", "What is 2+2?", "Name an animal.", "Give me a word."]


def test_judge_five_prompts_blind_then_score_and_export(db, services, random_adapter_dir, tmp_path):
    adapter_id = add_adapter(db, random_adapter_dir, SMOLLM2, "random-lora")
    adapter = f"adapter:{adapter_id}"
    assert [m for _, m in judging.candidates(db, SMOLLM2)] == ["base", adapter]
    session, job_id = judging.start(db, SMOLLM2, ["base", adapter], PROMPTS, settings={"max_new_tokens": 8})
    answer(db, job_id, services)
    table = service.compare_table(db, session)
    by_model = {"base": [r[1] for r in table["rows"]], adapter: [r[2] for r in table["rows"]]}

    shown_first = set()
    for i in range(len(PROMPTS)):
        row = judging.duel(db, session, i)
        assert row["ready"] and row["reveal"] is None and row["pick"] is None  # identities hidden
        assert row["prompt"] == PROMPTS[i] and {row["a"], row["b"]} <= {by_model["base"][i], by_model[adapter][i]}
        adapter_side = "a" if row["a"] == by_model[adapter][i] else "b"
        shown_first.add(adapter_side)
        pick = "tie" if i == 4 else adapter_side
        done = judging.judge(db, session, i, pick)
        assert done["pick"] == pick and done["reveal"][adapter_side] == f"random-lora (#{adapter_id})"
        assert judging.duel(db, session, i)["a"] == row["a"]  # the order is the same on every reload
    assert judging.next_unjudged(db, session) is None
    with pytest.raises(ChatError, match="already judged"):
        judging.judge(db, session, 0, "a")
    with pytest.raises(ChatError, match="pick must be one of"):
        judging.judge(db, session, 0, "left")

    (score,) = judging.scoreboard(db, SMOLLM2)
    assert (score.first, score.second, score.judgements) == ("base", adapter, 5)
    assert (score.first_wins, score.second_wins, score.ties, score.win_rate) == (0, 4, 1, 0.0)
    assert (score.ci_low, score.ci_high) == pytest.approx((0.0, 0.4899), abs=1e-4)  # Wilson, 0 of 4
    assert judging.leader(score) == adapter

    path, n, left_out = judging.export_jsonl(db, tmp_path / "pairs.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert n == len(rows) == 4 and left_out["tie"] == 1
    assert rows[0]["chosen"][0]["content"] == by_model[adapter][0]
    assert rows[0]["rejected"][0]["content"] == by_model["base"][0]

    dataset, _ = judging.export_dataset(db, "my judgements")
    assert dataset_kind(dataset) == "preference" and dataset.num_rows == 4
    first = next(read_canonical(db, dataset.id))
    assert first["chosen"][0]["content"][0]["text"] == by_model[adapter][0]
    spec = RunSpec.model_validate(judging.dpo_spec(db, dataset.id, SMOLLM2, judging.leader(score)))
    assert spec.stage.start_from == adapter and static_problems(spec, db) == []


def test_the_shown_order_is_random_per_row_but_fixed_for_a_row():
    session = {"models": ["base", "adapter:1"], "seed": "abc"}
    orders = [judging.shown_order(session, 7, i) for i in range(40)]
    assert {o[0] for o in orders} == {"base", "adapter:1"}  # both sides get shown as A
    assert 10 <= sum(o[0] == "base" for o in orders) <= 30
    assert orders == [judging.shown_order(session, 7, i) for i in range(40)]


def test_wilson_interval_matches_known_values():
    assert judging.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = judging.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_bad_sessions_are_refused(db):
    with pytest.raises(ChatError, match="two different models"):
        judging.start(db, SMOLLM2, ["base", "base"], PROMPTS)
    with pytest.raises(ChatError, match="not a model to judge"):
        judging.start(db, SMOLLM2, ["base", "lora-7"], PROMPTS)
    with pytest.raises(ChatError, match="no judgements with a winner"):
        judging.export_jsonl(db, db.workspace.tmp_dir / "none.jsonl")


def test_reward_models_are_not_offered_or_accepted(db):
    from storage.models import Adapter, Run

    with db.session() as s:
        run = Run(name="rm", model_ref=SMOLLM2, method="lora", spec={"stage": {"name": "reward"}})
        s.add(run)
        s.flush()
        adapter = Adapter(run_id=run.id, name="rm", method="lora", base_model_ref=SMOLLM2, path="runs/1/adapter")
        s.add(adapter)
        s.flush()
        adapter_id = adapter.id
    assert judging.candidates(db, SMOLLM2) == [("Base model", "base")]
    with pytest.raises(ChatError, match="reward model"):
        judging.start(db, SMOLLM2, ["base", f"adapter:{adapter_id}"], PROMPTS)


def test_export_uses_the_edited_answer_and_leaves_out_what_teaches_nothing(db):
    from storage.models import Judgement

    def add(pick, a="answer A", b="answer B", edited=None, models=("base", "adapter:1")):
        with db.session() as s:
            s.add(Judgement(base_model_ref=SMOLLM2, system="Be brief.", prompt=f"prompt {pick}", model_a=models[0],
                            model_b=models[1], answer_a=a, answer_b=b, pick=pick, edited=edited, settings={}))

    add("a", edited="a better answer")
    add("b")
    add("tie")
    add("both_bad")
    add("both_bad", edited="what both should have said")
    add("a", a="same", b="same")
    add("b", models=("adapter:1", "adapter:2"))
    rows, left_out = judging.preference_rows(db, SMOLLM2, ["base", "adapter:1"])
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("a better answer", "answer B"), ("answer B", "answer A"), ("what both should have said", "answer A")]
    assert rows[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "prompt a"}]
    assert left_out == {"tie": 1, "both_bad": 1, "same_answers": 1, "other_pair": 1}
