"""DPO, KTO and reward stages on the real SmolLM2-135M-Instruct (CPU, tiny settings), through the
job queue: DPO lowers its loss, raises the reward accuracy and makes the adapter prefer held-out
chosen answers more than the base does; a reward model ranks held-out pairs above chance; KTO
trains; DPO continues an SFT adapter. Static checks refuse a stage that does not fit the data."""
from __future__ import annotations

import json
from statistics import mean

import pytest
import torch

from jobs.worker import run_inline
from storage.models import JobStatus
from studio.datasets import ImportOptions, import_dataset
from studio.models import load_model, load_tokenizer_or_processor
from studio.spec import RunSpec
from studio.spec.checks import static_problems
from studio.training.service import get_run, run_adapters, run_metrics, start_run
from tests.training.helpers import FAST_TEXT_TRAIN

pytestmark = pytest.mark.slow

THINGS = ["tea", "rain", "music", "bread", "snow", "coffee", "books", "cats", "sunlight", "rivers", "apples",
          "trains", "gardens", "candles", "maps", "bicycles"]
HELD_OUT = ["clouds", "pianos", "lemons", "boats"]


def pair(thing: str) -> dict:
    # one clear preference the model can pick up in a few steps: a warm yes over a curt no
    return {"prompt": f"Do you like {thing}?", "chosen": f"Yes, I love {thing}!", "rejected": "No."}


def import_rows(db, name: str, rows: list[dict]) -> int:
    path = db.workspace.uploads_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return import_dataset(db, path, ImportOptions()).dataset.id


@pytest.fixture
def pairs_id(db) -> int:
    return import_rows(db, "pairs.jsonl", [pair(t) for t in THINGS])


def spec(model: str, dataset_id: int, stage: dict, **train) -> dict:
    return {"model": model, "data": {"dataset_id": dataset_id}, "method": {"name": "lora", "r": 8},
            "stage": stage, "train": {**FAST_TEXT_TRAIN, "cutoff_len": 64, **train}}


def train_inline(db, run_spec: dict):
    run_id = start_run(db, run_spec)
    outcome = run_inline(db, get_run(db, run_id).job_id)
    assert outcome.status == JobStatus.SUCCEEDED, outcome.error
    return get_run(db, run_id)


def answer_logp(model, tok, prompt: str, answer: str) -> float:
    """Sum of the log-probabilities of ``answer``'s tokens after ``prompt`` in the chat template."""
    user = [{"role": "user", "content": prompt}]
    head = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    head_ids = tok(head, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tok(full, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(-1, targets[:, None])[:, 0]
    return float(token_logps[len(head_ids) - 1:].sum())


def held_out_margin(model, tok) -> float:
    return mean(answer_logp(model, tok, p["prompt"], p["chosen"]) - answer_logp(model, tok, p["prompt"], p["rejected"])
                for p in map(pair, HELD_OUT))


def test_dpo_lowers_loss_raises_accuracy_and_the_adapter_prefers_chosen_answers(db, smollm2_path, smollm2,
                                                                               pairs_id):
    from peft import PeftModel

    run = train_inline(db, spec(smollm2, pairs_id, {"name": "dpo", "beta": 0.1}, max_steps=5,
                                learning_rate=5e-4))
    rows = [m for m in run_metrics(db, run.id, "train") if m.loss is not None]
    losses = [m.loss for m in rows]
    accuracies = [m.reward_accuracy for m in rows]
    assert None not in accuracies and all(m.logps_chosen is not None and m.logps_rejected is not None for m in rows)
    # the first step's policy is the reference: loss log(2), accuracy 0 (equal rewards); then it learns
    assert losses[0] == pytest.approx(0.6931, abs=0.01)
    assert mean(losses[-2:]) < 0.6 * losses[0], losses
    assert mean(accuracies[-2:]) > max(accuracies[0], 0.5), accuracies
    assert rows[-1].reward_margin > rows[0].reward_margin
    tok = load_tokenizer_or_processor(smollm2_path, "text")
    base = load_model(smollm2_path, "text", dtype=torch.float32).eval()
    before = held_out_margin(base, tok)
    (adapter,) = run_adapters(db, run.id)
    tuned = PeftModel.from_pretrained(base, db.workspace.confine(adapter.path)).eval()
    after = held_out_margin(tuned, tok)
    assert after > before + 1.0, (before, after)
    saved = RunSpec.load(db.workspace.run_dir(run.id) / "spec.yaml")
    assert (saved.stage.name, saved.stage.beta) == ("dpo", 0.1)


def test_reward_model_ranks_held_out_pairs_above_chance(db, smollm2_path, smollm2, pairs_id):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    run = train_inline(db, spec(smollm2, pairs_id, "reward", max_steps=6, learning_rate=1e-3))
    assert any(m.reward_accuracy is not None for m in run_metrics(db, run.id, "train"))
    tok = load_tokenizer_or_processor(smollm2_path, "text")
    model = AutoModelForSequenceClassification.from_pretrained(smollm2_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    (adapter,) = run_adapters(db, run.id)
    model = PeftModel.from_pretrained(model, db.workspace.confine(adapter.path)).eval()

    def score(p, answer):
        text = tok.apply_chat_template([{"role": "user", "content": p["prompt"]},
                                        {"role": "assistant", "content": answer}], tokenize=False)
        with torch.no_grad():
            return float(model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0])

    held = [pair(t) for t in HELD_OUT]
    accuracy = mean(score(p, p["chosen"]) > score(p, p["rejected"]) for p in held)
    assert accuracy > 0.5, accuracy


def test_kto_trains_on_pairs_split_into_good_and_bad_completions(db, smollm2, pairs_id):
    run = train_inline(db, spec(smollm2, pairs_id, {"name": "kto", "beta": 0.1}, max_steps=2, batch_size=4))
    losses = [m.loss for m in run_metrics(db, run.id, "train") if m.loss is not None]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # finite, logged every step
    assert run_adapters(db, run.id)


def test_dpo_continues_an_sft_adapter(db, smollm2, pairs_id):
    sft_id = import_rows(db, "sft.jsonl", [{"instruction": p["prompt"], "output": p["chosen"]}
                                           for p in map(pair, THINGS[:4])])
    sft = train_inline(db, spec(smollm2, sft_id, "sft", max_steps=1))
    (sft_adapter,) = run_adapters(db, sft.id)
    dpo = train_inline(db, spec(smollm2, pairs_id, {"name": "dpo", "start_from": f"run:{sft.id}"}, max_steps=1))
    (adapter,) = run_adapters(db, dpo.id)
    folder = db.workspace.confine(adapter.path)
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "ref").exists()
    from safetensors.torch import load_file

    start = load_file(db.workspace.confine(sft_adapter.path) / "adapter_model.safetensors")
    end = load_file(folder / "adapter_model.safetensors")
    assert start.keys() == end.keys()  # the same adapter, continued
    assert any(not torch.equal(start[k], end[k]) for k in start)


# -- static checks (no model) ------------------------------------------------------------------------------
def test_stage_that_does_not_fit_the_data_or_a_missing_adapter_is_refused(db, pairs_id):
    sft_id = import_rows(db, "sft.jsonl", [{"instruction": "hi", "output": "hello"}])
    base = {"model": "builtin:smollm2-135m-instruct", "method": "lora"}
    problems = static_problems(RunSpec.model_validate({**base, "data": {"dataset_id": sft_id}, "stage": "dpo"}), db)
    assert [p.field for p in problems] == ["stage.name"] and "preference pairs" in problems[0].message
    problems = static_problems(RunSpec.model_validate({**base, "data": {"dataset_id": pairs_id}}), db)
    assert [p.field for p in problems] == ["stage.name"] and "instruction rows" in problems[0].message
    problems = static_problems(RunSpec.model_validate({**base, "data": {"dataset_id": pairs_id},
                                                       "stage": {"name": "dpo", "start_from": "adapter:99"}}), db)
    assert [p.field for p in problems] == ["stage.start_from"] and "no adapter with id 99" in problems[0].message
    kto_on_pairs = RunSpec.model_validate({**base, "data": {"dataset_id": pairs_id}, "stage": "kto"})
    assert static_problems(kto_on_pairs, db) == []
    with pytest.raises(ValueError, match="beta"):
        RunSpec.model_validate({**base, "data": {"dataset_id": pairs_id}, "stage": {"name": "dpo", "beta": 0}})


def test_dpo_on_the_vision_language_model_with_image_pairs(db, tiny_vl):
    from PIL import Image

    from tests.training.helpers import SMALL_IMAGES

    folder = db.workspace.uploads_dir / "colours"
    folder.mkdir(parents=True)
    rows = []
    for colour in ("red", "blue", "green", "yellow"):
        Image.new("RGB", (56, 56), colour).save(folder / f"{colour}.png")
        rows.append({"conversations": [{"from": "human", "value": "<image>What colour is this?"}],
                     "chosen": {"from": "gpt", "value": colour}, "rejected": {"from": "gpt", "value": "black"},
                     "images": [f"{colour}.png"]})
    (folder / "pairs.json").write_text(json.dumps(rows), encoding="utf-8")
    dataset = import_dataset(db, folder / "pairs.json", ImportOptions()).dataset
    assert (dataset.num_images, dataset.format) == (4, "sharegpt_preference")
    run = train_inline(db, {**spec(tiny_vl, dataset.id, "dpo", max_steps=3, learning_rate=5e-3, cutoff_len=256),
                            "vision": SMALL_IMAGES})
    rows = [m for m in run_metrics(db, run.id, "train") if m.loss is not None]
    assert rows[-1].loss < rows[0].loss and rows[-1].reward_accuracy > rows[0].reward_accuracy
