"""Batch comparison: prompts through the base model and adapters, a table, exports, reopening."""
from __future__ import annotations

import csv
import json

from storage.models import Dataset, JobStatus
from studio.inference import service
from studio.models import SMOLLM2
from tests.inference.helpers import answer


def canonical_dataset(db, rows: list[list[tuple[str, str]]]) -> int:
    """A dataset folder with a canonical validation.jsonl, as the importer writes it."""
    with db.session() as s:
        ds = Dataset(name="identity-val", format="messages")
        s.add(ds)
        s.flush()
        ds.path = f"datasets/{ds.id}"
        dataset_id = ds.id
    folder = db.workspace.dataset_dir(dataset_id)
    folder.mkdir(parents=True)
    lines = [json.dumps({"messages": [{"role": role, "content": [{"type": "text", "text": text}]}
                                      for role, text in turns]}) for turns in rows]
    (folder / "validation.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dataset_id


def test_typed_prompts_give_a_table_that_exports_and_reopens(db, identity_id, services):
    prompts = ["Who are you?", "What is your name?"]
    chat_id, job_id = service.create_compare(db, SMOLLM2, [identity_id], prompts, settings={"max_new_tokens": 16})

    state = answer(db, job_id, services)

    assert state["status"] == JobStatus.SUCCEEDED and state["fraction"] == 1.0
    table = service.compare_table(db, chat_id)
    assert table["headers"] == ["Prompt", "Base model", "identity-nova (#%d)" % identity_id]
    assert [r[0] for r in table["rows"]] == prompts
    for _, base, tuned in table["rows"]:
        assert base and tuned and base != tuned
    assert "Nova" in table["rows"][0][2]

    with service.export_compare(db, chat_id, "csv").open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [table["headers"], *table["rows"]]
    exported = [json.loads(line) for line in service.export_compare(db, chat_id, "jsonl").read_text().splitlines()]
    assert exported[0]["prompt"]["text"] == prompts[0]
    assert exported[0]["answers"]["Base model"]["text"] == table["rows"][0][1]
    assert exported[0]["answers"]["Base model"]["new_tokens"] > 0

    reopened = service.get_chat(db, chat_id)
    assert reopened["kind"] == "compare" and reopened["settings"]["temperature"] == 0.0  # greedy by default
    assert [c["key"] for c in reopened["columns"]] == ["base", f"adapter-{identity_id}"]
    assert service.list_chats(db, kind="compare")[0]["id"] == chat_id


def test_prompts_come_from_a_dataset_split(db, services):
    dataset_id = canonical_dataset(db, [
        [("system", "Answer in one word."), ("user", "Capital of France?"), ("assistant", "Paris")],
        [("user", "2 + 2?"), ("assistant", "4"), ("user", "And 3 + 3?"), ("assistant", "6")],
    ])
    chat_id, job_id = service.create_compare(db, SMOLLM2, [], dataset_id=dataset_id, split="validation",
                                             settings={"max_new_tokens": 6})

    view = service.get_chat(db, chat_id)
    assert [r["prompt"] for r in view["rows"]] == [
        {"text": "Capital of France?", "images": [], "system": "Answer in one word."},
        {"text": "2 + 2?", "images": []}]
    assert answer(db, job_id, services)["status"] == JobStatus.SUCCEEDED
    assert all(r[1] for r in service.compare_table(db, chat_id)["rows"])
