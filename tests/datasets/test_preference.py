"""Preference and KTO data: every form people have becomes the one canonical pair (prompt messages
+ chosen/rejected assistant messages), the dataset records its kind, and hostile files are refused
row by row with nothing written."""
from __future__ import annotations

import pytest

from studio.datasets import DatasetImportError, ImportOptions, import_dataset, preview, read_canonical
from studio.datasets.preference import trainer_example
from studio.datasets.service import dataset_kind
from tests.datasets.helpers import nothing_written, png_bytes, write, write_json, write_jsonl

PAIR = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


def imported(db, name, rows, **options):
    path = write_jsonl(db.workspace.uploads_dir / name, rows)
    return import_dataset(db, path, ImportOptions(**options))


def refused(db, name, rows, writer=write_jsonl):
    path = writer(db.workspace.uploads_dir / name, rows)
    with pytest.raises(DatasetImportError) as e:
        import_dataset(db, path, ImportOptions())
    assert nothing_written(db)
    return e.value.problems


def text(messages):
    return [(m["role"], "".join(p.get("text", "") for p in m["content"])) for m in messages]


def only_row(db, result):
    (row,) = list(read_canonical(db, result.dataset.id))
    return row


@pytest.mark.parametrize("row, fmt", [
    (PAIR, "preference"),
    # UltraFeedback-binarized: chosen/rejected are the whole conversation, beside a prompt string and `messages`
    ({"prompt": "What is 2+2?", "prompt_id": "x",
      "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
      "rejected": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"}],
      "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
      "score_chosen": 9.0, "score_rejected": 2.0}, "preference"),
    # conversational prompt/chosen/rejected (TRL)
    ({"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
      "rejected": [{"role": "assistant", "content": "5"}]}, "preference"),
    ({"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5"},
     "hh_rlhf"),
    ({"conversations": [{"from": "human", "value": "What is 2+2?"}], "chosen": {"from": "gpt", "value": "4"},
      "rejected": {"from": "gpt", "value": "5"}}, "sharegpt_preference"),
    ({"instruction": "What is 2+2?", "input": "", "chosen": "4", "rejected": "5"}, "alpaca_ranking"),
])
def test_every_pair_form_becomes_the_same_canonical_row(db, row, fmt):
    result = imported(db, f"{fmt}.jsonl", [row])
    assert (result.report.format, result.report.kind, dataset_kind(result.dataset)) == (fmt, "preference", "preference")
    stored = only_row(db, result)
    assert text(stored["messages"]) == [("user", "What is 2+2?")]
    assert (text(stored["chosen"]), text(stored["rejected"])) == ([("assistant", "4")], [("assistant", "5")])
    example = trainer_example(stored)
    assert set(example) == {"prompt", "chosen", "rejected"} and example["prompt"] == stored["messages"]


def test_alpaca_ranking_older_output_list_form_when_chosen(db):
    row = {"instruction": "Name a colour", "output": ["blue", "the"]}
    result = imported(db, "rank.jsonl", [row], format="alpaca_ranking")
    stored = only_row(db, result)
    assert (text(stored["chosen"]), text(stored["rejected"])) == ([("assistant", "blue")], [("assistant", "the")])


def test_multi_turn_hh_transcript_keeps_the_earlier_turns_as_prompt(db):
    head = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of France?\n\nAssistant:"
    result = imported(db, "hh.jsonl", [{"chosen": head + " Paris.", "rejected": head + " Berlin."}])
    stored = only_row(db, result)
    assert text(stored["messages"]) == [("user", "Hi"), ("assistant", "Hello!"), ("user", "Capital of France?")]
    assert text(stored["chosen"]) == [("assistant", "Paris.")]


def test_kto_rows_keep_their_label(db):
    rows = [{"prompt": "2+2?", "completion": "4", "label": True}, {"prompt": "2+2?", "completion": "5", "label": "false"}]
    result = imported(db, "kto.jsonl", rows)
    assert dataset_kind(result.dataset) == "kto"
    stored = list(read_canonical(db, result.dataset.id))
    assert [(r["kind"], text(r["completion"]), r["label"]) for r in stored] == [
        ("kto", [("assistant", "4")], True), ("kto", [("assistant", "5")], False)]
    assert trainer_example(stored[1])["label"] is False


def test_sharegpt_pair_with_image_stores_the_image_in_the_prompt(db):
    write(db.workspace.uploads_dir / "img" / "a.png", png_bytes())
    row = {"conversations": [{"from": "human", "value": "<image>What colour?"}],
           "chosen": {"from": "gpt", "value": "Blue."}, "rejected": {"from": "gpt", "value": "Red."},
           "images": ["a.png"]}
    result = import_dataset(db, write_json(db.workspace.uploads_dir / "img" / "vl.json", [row]), ImportOptions())
    (shown,) = preview(db, result.dataset.id)
    kinds = [p["type"] for p in shown["messages"][0]["content"]]
    assert kinds == ["image", "text"] and result.dataset.num_images == 1
    assert text(shown["chosen"]) == [("assistant", "Blue.")]


# -- hostile files ------------------------------------------------------------------------------------
def test_same_answers_missing_prompt_and_bad_label_are_row_level_and_nothing_is_written(db):
    rows = [PAIR, {"prompt": "a", "chosen": "same", "rejected": "same"},
            {"prompt": "", "chosen": "x", "rejected": "y"}, {"prompt": "b", "chosen": "x"}]
    problems = refused(db, "bad.jsonl", rows)
    got = {(p.row, p.field, p.code) for p in problems}
    assert got == {(2, "rejected", "same_answers"), (3, "prompt", "empty_turn"), (4, "rejected", "missing_field")}
    assert all(p.file == "bad.jsonl" for p in problems)


def test_transcripts_without_a_shared_prompt_are_refused(db):
    rows = [{"chosen": "\n\nHuman: A?\n\nAssistant: yes", "rejected": "\n\nHuman: B?\n\nAssistant: no"},
            {"chosen": "no speakers here", "rejected": "\n\nHuman: B?\n\nAssistant: no"}]
    problems = refused(db, "hh.jsonl", rows)
    assert {(p.row, p.code) for p in problems} == {(1, "missing_field"), (2, "bad_value")}
    assert "share no prompt" in problems[0].message


def test_mixed_kinds_name_the_row_and_what_it_is(db):
    rows = [PAIR, {"instruction": "Say hi", "output": "hi"}, {"prompt": "p", "completion": "c", "label": True}]
    problems = refused(db, "mixed.jsonl", rows)
    assert [(p.row, p.code) for p in problems] == [(2, "mixed_kinds"), (3, "mixed_kinds")]
    assert "instruction (SFT) rows" in problems[0].message and "KTO rows" in problems[1].message
    # and the reverse: one pair in an instruction file is the odd row, not every instruction row
    problems = refused(db, "mixed2.json", [{"instruction": "a", "output": "b"}, {"instruction": "Say hi", "output": "hi"},
                                           PAIR], writer=write_json)
    assert [(p.row, p.code) for p in problems] == [(3, "mixed_kinds")]
    assert "preference pairs" in problems[0].message and "alpaca" in problems[0].message


def test_pair_with_missing_image_is_refused(db):
    row = {"prompt": "<image>What colour?", "chosen": "Blue", "rejected": "Red", "images": ["nowhere.png"]}
    (p,) = refused(db, "vl.jsonl", [row])
    assert (p.row, p.code) == (1, "missing_image")


def test_answer_that_is_a_whole_turn_list_is_refused(db):
    row = {"prompt": "hi", "chosen": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
           "rejected": "c"}
    (p,) = refused(db, "turns.jsonl", [row])
    assert (p.row, p.field, p.code) == (1, "chosen", "role_order")


def test_statistics_measure_prompt_plus_the_longer_answer(db, tiny_tokenizer):
    from studio.datasets import statistics

    long_answer = "The quick brown fox jumps over the lazy dog. " * 4
    short = imported(db, "short.jsonl", [{"prompt": "Hello", "chosen": "Hi", "rejected": "Yo"}])
    long = imported(db, "long.jsonl", [{"prompt": "Hello", "chosen": "Hi", "rejected": long_answer}])
    short_max = statistics(db, short.dataset.id, tiny_tokenizer).to_dict()["max_tokens"]
    long_max = statistics(db, long.dataset.id, tiny_tokenizer).to_dict()["max_tokens"]
    assert long_max >= short_max + len(tiny_tokenizer(long_answer)["input_ids"]) - 2
