"""Blind A/B judging: the same prompts to two of {base, adapters}, shown as A and B in random
order; a person picks A, B, a tie or both bad; each judgement is stored with both answers and who
gave them; a scoreboard per pair of models; judgements become a preference dataset.

A judging session is a batch comparison (``service.create_compare``: one worker job answers every
prompt with each model, greedy by default) plus the pair being judged (``judging.json`` beside the
chat). Which model is shown as A on a row is drawn from a seeded generator keyed by the chat and
the row: the same on every reload, unknown to the person, and revealed only after the pick.

Models are named ``base`` or ``adapter:<id>``.
"""
from __future__ import annotations

import json
import math
import random
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import select

from storage.db import Database
from storage.models import Adapter, Judgement, Run
from storage.workspace import atomic_write_text
from studio.inference import service, transcript
from studio.inference.errors import ChatError

BASE = "base"
PICKS = ("a", "b", "tie", "both_bad")
SESSION_FILE = "judging.json"
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


# -- models -------------------------------------------------------------------------------------------
def adapter_id_of(model: str) -> int | None:
    if model == BASE:
        return None
    kind, _, number = model.partition(":")
    if kind != "adapter" or not number.isdigit():
        raise ChatError(f"{model!r} is not a model to judge: use 'base' or 'adapter:<id>'")
    return int(number)


def model_label(db: Database, model: str) -> str:
    adapter_id = adapter_id_of(model)
    if adapter_id is None:
        return "Base model"
    with db.session() as s:
        row = s.get(Adapter, adapter_id)
        return f"{row.name} (#{adapter_id})" if row is not None else f"adapter #{adapter_id} (deleted)"


def candidates(db: Database, base_ref: str) -> list[tuple[str, str]]:
    """(label, model) of everything that can be judged on this base: the base and its adapters
    (not reward models: they score answers, they do not write them)."""
    with db.session() as s:
        rows = s.scalars(select(Adapter).where(Adapter.base_model_ref == base_ref).order_by(Adapter.id.desc()))
        return [("Base model", BASE)] + [(f"{a.name} (#{a.id})", f"adapter:{a.id}") for a in rows
                                         if not is_reward_model(s, a)]


def is_reward_model(session: Any, adapter: Adapter) -> bool:
    run = session.get(Run, adapter.run_id) if adapter.run_id else None
    return ((run.spec or {}).get("stage") or {}).get("name") == "reward" if run is not None else False


def column_key(model: str) -> str:
    return transcript.pane_key(adapter_id_of(model))


# -- a session ---------------------------------------------------------------------------------------
def start(db: Database, base_ref: str, models: Sequence[str], prompts: Sequence[str] = (), *,
          dataset_id: int | None = None, split: str = "validation", limit: int = 50,
          settings: dict[str, Any] | None = None) -> tuple[int, int]:
    """Queue the answers of two models to the prompts; returns ``(session id, job id)`` (the session
    is the comparison's chat id)."""
    if len(models) != 2 or models[0] == models[1]:
        raise ChatError("pick two different models to judge against each other")
    adapter_ids = [a for a in map(adapter_id_of, models) if a is not None]
    with db.session() as s:
        for adapter_id in adapter_ids:
            adapter = s.get(Adapter, adapter_id)
            if adapter is not None and is_reward_model(s, adapter):
                raise ChatError(f"adapter {adapter_id} is a reward model: it scores answers and cannot write one")
    chat_id, job_id = service.create_compare(db, base_ref, adapter_ids, prompts, dataset_id=dataset_id, split=split,
                                             limit=limit, settings=settings, title="Blind A/B judging")
    session = {"models": list(models), "seed": secrets.token_hex(8)}
    atomic_write_text(service.chat_dir(db, chat_id) / SESSION_FILE, json.dumps(session))
    return chat_id, job_id


def _session(db: Database, chat_id: int) -> dict[str, Any]:
    path = service.chat_dir(db, chat_id) / SESSION_FILE
    if not path.is_file():
        raise ChatError(f"chat {chat_id} is not a judging session")
    return json.loads(path.read_text(encoding="utf-8"))


def shown_order(session: dict[str, Any], chat_id: int, index: int) -> tuple[str, str]:
    """(model shown as A, model shown as B) on row ``index``."""
    first, second = session["models"]
    swap = random.Random(f"{session['seed']}:{chat_id}:{index}").random() < 0.5
    return (second, first) if swap else (first, second)


def _judged(db: Database, chat_id: int) -> dict[int, Judgement]:
    with db.session() as s:
        rows = s.scalars(select(Judgement).where(Judgement.batch == f"chat:{chat_id}"))
        return {int(j.settings.get("row", -1)): j for j in rows}


def duel(db: Database, chat_id: int, index: int) -> dict[str, Any]:
    """Row ``index`` as the person sees it: the prompt and the answers as A and B, identities
    hidden until the row is judged (then ``reveal`` names both and ``pick`` is set)."""
    view, session = service.get_chat(db, chat_id), _session(db, chat_id)
    rows = view["rows"]
    if not 0 <= index < len(rows):
        raise ChatError(f"row {index + 1} does not exist: the session has {len(rows)} prompts")
    model_a, model_b = shown_order(session, chat_id, index)
    answers = rows[index]["answers"]
    a, b = answers.get(column_key(model_a)), answers.get(column_key(model_b))
    done = _judged(db, chat_id).get(index)
    out = {"index": index, "total": len(rows), "prompt": rows[index]["prompt"].get("text", ""),
           "a": _text(a), "b": _text(b), "ready": a is not None and b is not None,
           "pick": done.pick if done else None, "reveal": None}
    if done:
        out["reveal"] = {"a": model_label(db, done.model_a), "b": model_label(db, done.model_b)}
    return out


def _text(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return ""
    return f"[error] {answer['error']}" if answer.get("error") else answer.get("text", "")


def next_unjudged(db: Database, chat_id: int) -> int | None:
    total = len(service.get_chat(db, chat_id)["rows"])
    judged = _judged(db, chat_id)
    return next((i for i in range(total) if i not in judged), None)


def judge(db: Database, chat_id: int, index: int, pick: str, edited: str | None = None) -> dict[str, Any]:
    """Store the pick for row ``index``; returns the row with the identities revealed."""
    if pick not in PICKS:
        raise ChatError(f"pick must be one of {', '.join(PICKS)}, not {pick!r}")
    shown = duel(db, chat_id, index)
    if shown["pick"] is not None:
        raise ChatError(f"row {index + 1} is already judged ({shown['pick']})")
    if not shown["ready"]:
        raise ChatError("both answers are not there yet: wait for the models to finish")
    view, session = service.get_chat(db, chat_id), _session(db, chat_id)
    model_a, model_b = shown_order(session, chat_id, index)
    edited = (edited or "").strip() or None
    if edited and pick not in ("a", "b", "both_bad"):
        raise ChatError("an edited answer replaces the better one: pick A or B (or both bad) to keep it")
    system = view["rows"][index]["prompt"].get("system", "")
    with db.session() as s:
        s.add(Judgement(base_model_ref=view["base_model_ref"], system=system or "", prompt=shown["prompt"],
                        model_a=model_a, model_b=model_b, answer_a=shown["a"], answer_b=shown["b"], pick=pick,
                        edited=edited, settings={**view["settings"], "row": index}, batch=f"chat:{chat_id}"))
    return duel(db, chat_id, index)


# -- scoreboard -----------------------------------------------------------------------------------------
def wilson_interval(wins: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a win rate: sensible at 0 and n wins and for few judgements."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PairScore:
    """How ``first`` fared against ``second``: win rate over the decisive judgements (ties and
    both-bad are counted, not scored), with its 95% Wilson interval."""

    base_model_ref: str
    first: str
    second: str
    first_label: str
    second_label: str
    judgements: int
    first_wins: int
    second_wins: int
    ties: int
    both_bad: int
    win_rate: float | None
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scoreboard(db: Database, base_ref: str | None = None) -> list[PairScore]:
    """One line per pair of models judged (in either order), most judged first."""
    with db.session() as s:
        q = select(Judgement)
        if base_ref:
            q = q.where(Judgement.base_model_ref == base_ref)
        rows = [(j.base_model_ref, j.model_a, j.model_b, j.pick) for j in s.scalars(q)]
    tallies: dict[tuple[str, str, str], dict[str, int]] = {}
    for base, a, b, pick in rows:
        first, second = sorted((a, b), key=_order_key)
        t = tallies.setdefault((base, first, second), {"first": 0, "second": 0, "tie": 0, "both_bad": 0, "n": 0})
        t["n"] += 1
        if pick in ("tie", "both_bad"):
            t[pick] += 1
        else:
            t["first" if (a if pick == "a" else b) == first else "second"] += 1
    out = []
    for (base, first, second), t in tallies.items():
        decisive = t["first"] + t["second"]
        low, high = wilson_interval(t["first"], decisive)
        out.append(PairScore(base, first, second, model_label(db, first), model_label(db, second), t["n"],
                             t["first"], t["second"], t["tie"], t["both_bad"],
                             t["first"] / decisive if decisive else None, low, high))
    return sorted(out, key=lambda p: -p.judgements)


def _order_key(model: str) -> tuple[int, int]:
    """The base first, then adapters by id: a pair always reads the same way round."""
    adapter_id = adapter_id_of(model)
    return (0, 0) if adapter_id is None else (1, adapter_id)


# -- export ------------------------------------------------------------------------------------------------
def preference_rows(db: Database, base_ref: str | None = None,
                    pair: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Judgements as conversational preference rows ``{"prompt": [...], "chosen": [...], "rejected":
    [...]}`` (the edited answer, when given, is the chosen one), and how many were left out and why."""
    with db.session() as s:
        q = select(Judgement).order_by(Judgement.id)
        if base_ref:
            q = q.where(Judgement.base_model_ref == base_ref)
        judgements = list(s.scalars(q))
    wanted = set(pair) if pair else None
    rows, left_out = [], {"tie": 0, "both_bad": 0, "same_answers": 0, "other_pair": 0}
    for j in judgements:
        if wanted is not None and {j.model_a, j.model_b} != wanted:
            left_out["other_pair"] += 1
            continue
        chosen, rejected = _chosen_rejected(j)
        if chosen is None:
            left_out[j.pick] += 1
            continue
        if chosen.strip() == rejected.strip():
            left_out["same_answers"] += 1
            continue
        prompt = ([{"role": "system", "content": j.system}] if j.system else []) + [{"role": "user", "content": j.prompt}]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows, left_out


def _chosen_rejected(j: Judgement) -> tuple[str | None, str | None]:
    if j.pick in ("a", "b"):
        winner, loser = (j.answer_a, j.answer_b) if j.pick == "a" else (j.answer_b, j.answer_a)
        return (j.edited or winner), loser
    if j.pick == "both_bad" and j.edited:  # the person wrote the answer both should have given
        return j.edited, j.answer_a
    return None, None


def export_jsonl(db: Database, path: str | Path, base_ref: str | None = None,
                 pair: Sequence[str] | None = None) -> tuple[Path, int, dict[str, int]]:
    """Write the judgements as preference JSONL (TRL's conversational form); (file, rows, left out)."""
    rows, left_out = preference_rows(db, base_ref, pair)
    if not rows:
        raise ChatError("no judgements with a winner to export yet" + _left_out_note(left_out))
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path, len(rows), left_out


def export_dataset(db: Database, name: str = "", base_ref: str | None = None, pair: Sequence[str] | None = None,
                   val_fraction: float = 0.0) -> tuple[Any, dict[str, int]]:
    """Import the judgements as a preference dataset in the studio (through the importer, so the
    rows are checked like any upload). Returns (the dataset row, what was left out)."""
    from studio.datasets import ImportOptions, import_dataset

    upload = db.workspace.uploads_dir / f"judgements-{secrets.token_hex(4)}.jsonl"
    upload.parent.mkdir(parents=True, exist_ok=True)
    _, _, left_out = export_jsonl(db, upload, base_ref, pair)
    options = ImportOptions(name=(name or "my judgements").strip()[:200], val_fraction=val_fraction)
    return import_dataset(db, upload, options).dataset, left_out


def _left_out_note(left_out: dict[str, int]) -> str:
    parts = [f"{n} {why.replace('_', ' ')}" for why, n in left_out.items() if n]
    return f" (left out: {', '.join(parts)})" if parts else ""


def dpo_spec(db: Database, dataset_id: int, base_ref: str, winner: str | None = None) -> dict[str, Any]:
    """The DPO run spec "train on my judgements" opens: the collected pairs, and the winning adapter
    (if an adapter won) as the one to continue."""
    stage: dict[str, Any] = {"name": "dpo"}
    if winner and winner != BASE:
        stage["start_from"] = winner
    return {"model": base_ref, "data": {"dataset_id": dataset_id}, "method": "lora", "stage": stage}


def leader(score: PairScore) -> str | None:
    """The model that won more of the decisive judgements of a pair (None on a draw)."""
    if score.first_wins == score.second_wins:
        return None
    return score.first if score.first_wins > score.second_wins else score.second
