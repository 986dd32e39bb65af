"""Chat testing for the UI and the CLI: plain functions over the database. No torch, no model.

    chat_id = create_chat(db, SMOLLM2, adapter_ids=[4], settings={"temperature": 0})
    job_id = send_message(db, chat_id, "Who are you?")
    poll(db, job_id)   # on a timer: {"status", "message", "panes": {key: {"text", "state", ...}}, "done", "error"}
    stop(db, job_id)   # generation ends within ~0.1 s; partial answers are kept
    get_chat(db, chat_id)  # reopen later: every pane's history

A message becomes a ``chat.message`` job; the worker's engine answers it and writes each pane's
partial text into the job row as it grows. Batch comparisons (``create_compare``) are
``chat.compare`` jobs whose answers land in the chat's transcript, row by row.
"""
from __future__ import annotations

import copy
import csv
import datetime as dt
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import func, select

from jobs import queue
from storage.db import Database
from storage.models import Adapter, Chat, Job, JobStatus, Run, utcnow
from storage.workspace import atomic_write_text

from . import transcript
from .errors import ChatBusyError, ChatError
from .settings import MAX_ADAPTERS, MAX_IMAGES_PER_MESSAGE, parse_settings

CHAT_JOB, COMPARE_JOB = "chat.message", "chat.compare"
CHAT_PRIORITY = 5  # above training (0): a message does not wait behind queued runs, only a running one
GPU_KINDS_LABELS = {"train": "a training run", "export": "an export"}
WORKER_SILENT_AFTER_S = 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
MAX_COMPARE_PROMPTS = 500


# -- chats --------------------------------------------------------------------------------------------
def create_chat(db: Database, base_ref: str, adapter_ids: Sequence[int] = (), settings: dict[str, Any] | None = None,
                title: str = "") -> int:
    """A new side-by-side chat: the base model alone, plus a pane per adapter (at most three)."""
    adapter_ids = _check_adapters(db, adapter_ids)
    base_ref = _check_base_ref(base_ref)
    chat_settings = parse_settings(settings)
    panes = [transcript.pane(None, "Base model")] + [transcript.pane(a, _adapter_label(db, a)) for a in adapter_ids]
    with db.session() as s:
        chat = Chat(title=title.strip()[:200], kind="chat", base_model_ref=base_ref, adapter_ids=list(adapter_ids),
                    settings=chat_settings.model_dump(), transcript=transcript.new_chat(panes))
        s.add(chat)
        s.flush()
        return chat.id


def update_settings(db: Database, chat_id: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Change the sampling settings of a chat (the next message uses them in every pane)."""
    with db.session() as s:
        chat = _get(s, chat_id)
        merged = parse_settings({**(chat.settings or {}), **settings}, compare=chat.kind == "compare").model_dump()
        chat.settings = merged
        return merged


def list_chats(db: Database, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Saved chats and comparisons, newest first (for a 'reopen' list)."""
    with db.session() as s:
        q = select(Chat).order_by(Chat.updated_at.desc(), Chat.id.desc()).limit(limit)
        if kind is not None:
            q = q.where(Chat.kind == kind)
        return [_summary(c) for c in s.execute(q).scalars()]


def get_chat(db: Database, chat_id: int) -> dict[str, Any]:
    """Everything needed to show a saved chat again: settings, panes with their histories (or the
    comparison table), and the job still answering, if any."""
    with db.session() as s:
        chat = _get(s, chat_id)
        data = copy.deepcopy(chat.transcript or {})
        pending = _live_pending(s, data)
        view = {**_summary(chat), "settings": dict(chat.settings or {}), "pending_job_id": pending}
        if chat.kind == "compare":
            view.update(columns=data.get("columns", []), rows=data.get("rows", []), source=data.get("source", {}))
        else:
            view["panes"] = data.get("panes", [])
            if pending is not None:
                view["pending_message"] = data["pending"]["message"]
            elif data.get("pending"):  # its job ended without saving: the worker died while answering
                job = s.get(Job, data["pending"]["job_id"])
                view["unanswered"] = {"message": data["pending"]["message"],
                                      "error": (job.error if job else None) or "the message was not answered"}
        return view


def delete_chat(db: Database, chat_id: int) -> None:
    """Remove a chat, its images, and stop a message still being answered."""
    with db.session() as s:
        chat = _get(s, chat_id)
        pending = _live_pending(s, chat.transcript or {})
        s.delete(chat)
    if pending is not None:
        queue.request_cancel(db, pending)
    shutil.rmtree(chat_dir(db, chat_id), ignore_errors=True)


def chat_dir(db: Database, chat_id: int) -> Path:
    """``<workspace>/chats/<id>/``: the chat's images and exports."""
    return db.workspace.root / "chats" / str(chat_id)


# -- messages -----------------------------------------------------------------------------------------
def send_message(db: Database, chat_id: int, text: str, images: Iterable[str | Path] = ()) -> int:
    """Queue one user message for every pane of the chat; returns the job id to ``poll``.

    Images are copied into the workspace (``chats/<id>/<sha256>.<ext>``) so the chat still shows
    them when the uploaded temporary files are gone."""
    text = (text or "").strip()
    images = [Path(p) for p in images]
    if not text and not images:
        raise ChatError("the message is empty: type a message or attach an image.")
    if len(images) > MAX_IMAGES_PER_MESSAGE:
        raise ChatError(f"{len(images)} images attached; at most {MAX_IMAGES_PER_MESSAGE} per message.")
    with db.session() as s:
        chat = _get(s, chat_id)
        if chat.kind != "chat":
            raise ChatError(f"chat {chat_id} is a batch comparison; run it again with rerun_compare().")
        busy = _live_pending(s, chat.transcript or {})
        if busy is not None:
            raise ChatBusyError(f"the previous message is still being answered (job {busy}); wait for it or stop it.")
        panes = [{"key": p["key"], "label": p["label"]} for p in chat.transcript["panes"]]
    stored = [_store_image(db, chat_id, p) for p in images]
    message = transcript.user_message(text, stored)
    with db.session() as s:  # the job and the chat's pending marker are committed together
        chat = _get(s, chat_id)
        job = Job(kind=CHAT_JOB, payload={"chat_id": chat_id, "message": message, "panes": panes},
                  priority=CHAT_PRIORITY)
        s.add(job)
        s.flush()
        data = copy.deepcopy(chat.transcript)
        data["pending"] = {"job_id": job.id, "message": message}
        chat.transcript = data
        if not chat.title:
            chat.title = (text or "image")[:60]
        chat.updated_at = utcnow()
        return job.id


def poll(db: Database, job_id: int) -> dict[str, Any]:
    """Where a chat or comparison job is, for the UI's timer::

        {"job_id", "chat_id", "status": queued|running|succeeded|failed|cancelled, "done": bool,
         "message": "waiting: a training run is using the GPU" | "generating: Base model" | ...,
         "error": str | None, "fraction": float | None, "order": [pane keys],
         "panes": {key: {"label", "text", "state": waiting|generating|done|stopped|error, "error", "meta"}}}
    """
    job = queue.get(db, job_id)
    if job.kind not in (CHAT_JOB, COMPARE_JOB):
        raise ChatError(f"job {job_id} is a {job.kind} job, not a chat")
    progress = dict(job.progress or {})
    payload = job.payload or {}
    if job.kind == COMPARE_JOB:  # answers land in the table (compare_table); only the progress matters here
        panes: dict[str, Any] = {}
    else:
        panes = progress.get("panes") or {p["key"]: {"label": p["label"], "state": "waiting", "text": "",
                                                     "error": None, "meta": {}} for p in payload.get("panes", [])}
    done = job.status in JobStatus.FINISHED
    return {"job_id": job.id, "chat_id": payload.get("chat_id"), "kind": job.kind, "status": job.status,
            "done": done, "message": _status_message(db, job, progress), "error": _job_error(job),
            "fraction": progress.get("fraction"), "order": progress.get("order") or list(panes), "panes": panes}


def stop(db: Database, job_id: int) -> str:
    """Stop generating. A running job ends within ~0.1 s and keeps the partial answers; a queued
    one never starts. Returns the job's status after the request."""
    status = queue.request_cancel(db, job_id)
    if status == JobStatus.CANCELLED:  # cancelled while queued: it will never clear its marker itself
        _clear_pending(db, job_id)
    return status


# -- batch comparison ---------------------------------------------------------------------------------
def create_compare(db: Database, base_ref: str, adapter_ids: Sequence[int] = (), prompts: Sequence[str] = (),
                   *, dataset_id: int | None = None, split: str = "validation", limit: int = 50,
                   settings: dict[str, Any] | None = None, title: str = "") -> tuple[int, int]:
    """A table of answers: every prompt through the base model and each adapter (greedy by default).

    Prompts are typed (``prompts``) or taken from a dataset split (the first user turn of each
    row, with its images). Returns ``(chat_id, job_id)``; the table fills in as the job runs."""
    adapter_ids = _check_adapters(db, adapter_ids)
    base_ref = _check_base_ref(base_ref)
    chat_settings = parse_settings(settings, compare=True)
    if dataset_id is not None:
        items, source = dataset_prompts(db, dataset_id, split, limit), {"dataset_id": dataset_id, "split": split}
    else:
        items, source = [{"text": p.strip(), "images": []} for p in prompts if p and p.strip()], {"typed": True}
    if not items:
        raise ChatError("no prompts to compare: type at least one, or choose a dataset split with rows.")
    if len(items) > MAX_COMPARE_PROMPTS:
        raise ChatError(f"{len(items)} prompts; at most {MAX_COMPARE_PROMPTS} per comparison.")
    columns = [{k: v for k, v in transcript.pane(None, "Base model").items() if k != "messages"}]
    columns += [{"key": transcript.pane_key(a), "label": _adapter_label(db, a), "adapter_id": a} for a in adapter_ids]
    with db.session() as s:
        chat = Chat(title=(title.strip() or f"Comparison of {len(items)} prompts")[:200], kind="compare",
                    base_model_ref=base_ref, adapter_ids=list(adapter_ids), settings=chat_settings.model_dump(),
                    transcript=transcript.new_compare(columns, items, source))
        s.add(chat)
        s.flush()
        chat_id = chat.id
    return chat_id, _enqueue_compare(db, chat_id, columns)


def rerun_compare(db: Database, chat_id: int) -> int:
    """Answer a saved comparison again (e.g. after changing its settings); old answers are replaced."""
    with db.session() as s:
        chat = _get(s, chat_id)
        if chat.kind != "compare":
            raise ChatError(f"chat {chat_id} is not a batch comparison")
        data = copy.deepcopy(chat.transcript)
        for row in data["rows"]:
            row["answers"] = {}
        chat.transcript = data
        columns = data["columns"]
    return _enqueue_compare(db, chat_id, columns)


def dataset_prompts(db: Database, dataset_id: int, split: str = "validation", limit: int = 50) -> list[dict[str, Any]]:
    """The first user turn of each row of a dataset split: ``{"text", "images", "system"}``, image
    paths relative to the workspace."""
    from studio.datasets import service as datasets

    try:
        folder = datasets.dataset_dir(db, dataset_id)
        rows = datasets.read_canonical(db, dataset_id, split, resolve_images=False)
        prompts = []
        for row in rows:
            prompt = _first_user_turn(row, folder, db)
            if prompt is not None:
                prompts.append(prompt)
            if len(prompts) >= limit:
                break
    except (LookupError, ValueError) as e:
        raise ChatError(f"cannot read prompts from dataset {dataset_id}: {e}") from None
    if not prompts:
        raise ChatError(f"dataset {dataset_id} has no {split} rows with a user turn"
                        + (" (it has no validation split: choose train)" if split == "validation" else "") + ".")
    return prompts


def compare_table(db: Database, chat_id: int) -> dict[str, Any]:
    """The comparison as a table: ``{"headers": ["Prompt", "Base model", ...], "rows": [[...], ...]}``.
    A cell shows the answer, ``[error] ...`` for a failed one, or "" while it is pending."""
    view = get_chat(db, chat_id)
    if view["kind"] != "compare":
        raise ChatError(f"chat {chat_id} is not a batch comparison")
    headers = ["Prompt"] + [c["label"] for c in view["columns"]]
    rows = [[_prompt_cell(r["prompt"])] + [_answer_cell(r["answers"].get(c["key"])) for c in view["columns"]]
            for r in view["rows"]]
    return {"headers": headers, "rows": rows}


def export_compare(db: Database, chat_id: int, fmt: str = "csv") -> Path:
    """Write the comparison to ``chats/<id>/compare-<id>.csv`` (one column per pane) or ``.jsonl``
    (one object per prompt with every answer and its timing). Returns the file."""
    if fmt not in ("csv", "jsonl"):
        raise ChatError(f"export format must be csv or jsonl, not {fmt!r}")
    view = get_chat(db, chat_id)
    if view["kind"] != "compare":
        raise ChatError(f"chat {chat_id} is not a batch comparison")
    path = chat_dir(db, chat_id) / f"compare-{chat_id}.{fmt}"
    atomic_write_text(path, _csv(db, chat_id) if fmt == "csv" else _jsonl(view))
    return path


# -- helpers ------------------------------------------------------------------------------------------
def _get(s, chat_id: int) -> Chat:
    chat = s.get(Chat, chat_id)
    if chat is None:
        raise ChatError(f"chat {chat_id} does not exist (deleted?)")
    return chat


def _summary(chat: Chat) -> dict[str, Any]:
    data = chat.transcript or {}
    if chat.kind == "compare":
        size = len(data.get("rows", []))
    else:
        panes = data.get("panes") or [{}]
        size = sum(1 for m in panes[0].get("messages", []) if m["role"] == "user")
    return {"id": chat.id, "title": chat.title, "kind": chat.kind, "base_model_ref": chat.base_model_ref,
            "adapter_ids": list(chat.adapter_ids or []), "size": size,
            "created_at": _iso(chat.created_at), "updated_at": _iso(chat.updated_at)}


def _iso(value: dt.datetime | None) -> str | None:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else None


def _check_adapters(db: Database, adapter_ids: Sequence[int]) -> list[int]:
    ids = [int(a) for a in adapter_ids]
    if len(ids) > MAX_ADAPTERS:
        raise ChatError(f"{len(ids)} adapters chosen; at most {MAX_ADAPTERS} fit beside the base model.")
    if len(set(ids)) != len(ids):
        raise ChatError("the same adapter is chosen twice.")
    with db.session() as s:
        rows = s.execute(select(Adapter.id, Run.spec).outerjoin(Run, Run.id == Adapter.run_id)
                         .where(Adapter.id.in_(ids))).all() if ids else []
    known = {row.id for row in rows}
    missing = [a for a in ids if a not in known]
    if missing:
        raise ChatError(f"no adapter with id {', '.join(map(str, missing))} (deleted?).")
    reward = [row.id for row in rows if (((row.spec or {}).get("stage") or {}).get("name")) == "reward"]
    if reward:
        raise ChatError(f"adapter {', '.join(map(str, reward))} is a reward model: it scores answers and cannot "
                        "write one, so it has no chat pane.")
    return ids


def _check_base_ref(base_ref: str) -> str:
    from studio.models import ModelError, parse_ref

    base_ref = (base_ref or "").strip()
    if not base_ref:
        raise ChatError("choose a base model.")
    try:
        parse_ref(base_ref)
    except ModelError as e:
        raise ChatError(str(e)) from None
    return base_ref


def _adapter_label(db: Database, adapter_id: int) -> str:
    from .adapters import label_of

    return label_of(db, adapter_id)


def _store_image(db: Database, chat_id: int, source: Path) -> str:
    """Copy an image into the chat's folder under its content hash; returns the workspace-relative path."""
    from PIL import Image, UnidentifiedImageError

    if not source.is_file():
        raise ChatError(f"image {source} not found.")
    suffix = source.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ChatError(f"{source.name}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    try:
        with Image.open(source) as im:
            im.verify()
    except (UnidentifiedImageError, OSError) as e:
        raise ChatError(f"{source.name} is not a readable image ({e}).") from None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = chat_dir(db, chat_id) / f"{digest}{suffix}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    return db.workspace.relative(target)


def _live_pending(s, data: dict[str, Any]) -> int | None:
    """The job still answering this chat, or None (a finished job's marker is stale)."""
    pending = (data or {}).get("pending")
    if not pending:
        return None
    job = s.get(Job, pending["job_id"])
    return pending["job_id"] if job is not None and job.status not in JobStatus.FINISHED else None


def _clear_pending(db: Database, job_id: int) -> None:
    job = queue.get(db, job_id)
    chat_id = (job.payload or {}).get("chat_id")
    with db.session() as s:
        chat = s.get(Chat, chat_id) if chat_id is not None else None
        if chat is not None and ((chat.transcript or {}).get("pending") or {}).get("job_id") == job_id:
            data = copy.deepcopy(chat.transcript)
            data["pending"] = None
            chat.transcript = data


def _status_message(db: Database, job: Job, progress: dict[str, Any]) -> str:
    if job.status == JobStatus.QUEUED:
        return _waiting_message(db, job)
    if job.status == JobStatus.RUNNING:
        return progress.get("message") or "starting"
    if job.status == JobStatus.CANCELLED:
        return "stopped"
    return "failed" if job.status == JobStatus.FAILED else "done"


def _waiting_message(db: Database, job: Job) -> str:
    """Why a queued chat job has not started: the worker's own reason when it gave one (e.g. which
    run holds the memory the chat model needs), else what the queue shows."""
    if (job.progress or {}).get("waiting"):
        return job.progress.get("message") or "waiting"
    with db.session() as s:
        running = list(s.execute(select(Job.kind).where(Job.status == JobStatus.RUNNING)).scalars())
        ahead = s.execute(select(func.count(Job.id)).where(
            Job.status == JobStatus.QUEUED,
            (Job.priority > job.priority) | ((Job.priority == job.priority) & (Job.id < job.id)))).scalar()
    for kind in running:
        if kind in GPU_KINDS_LABELS:
            return f"waiting: {GPU_KINDS_LABELS[kind]} is using the GPU"
    if running:
        return f"waiting: the worker is busy with another job ({running[0]})"
    if ahead:
        return f"waiting: {ahead} job{'s' if ahead > 1 else ''} ahead in the queue"
    age = (utcnow() - job.created_at).total_seconds()
    if age > WORKER_SILENT_AFTER_S:
        return f"waiting for the worker (nothing picked this up for {age:.0f} s: is the worker running?)"
    return "waiting for the worker"


def _job_error(job: Job) -> str | None:
    if job.status != JobStatus.FAILED:
        return None
    return (job.error or "the job failed").splitlines()[-1]


def _enqueue_compare(db: Database, chat_id: int, columns: list[dict[str, Any]]) -> int:
    panes = [{"key": c["key"], "label": c["label"]} for c in columns]
    return queue.enqueue(db, COMPARE_JOB, {"chat_id": chat_id, "panes": panes}, priority=CHAT_PRIORITY)


def _first_user_turn(row: dict[str, Any], folder: Path, db: Database) -> dict[str, Any] | None:
    system = ""
    for m in row.get("messages", []):
        if m["role"] == "system":
            system = transcript.message_text(m)
        if m["role"] == "user":
            images = [db.workspace.relative(folder / p) for p in transcript.message_images(m)]
            prompt = {"text": transcript.message_text(m), "images": images}
            return {**prompt, "system": system} if system else prompt
    return None


def _prompt_cell(prompt: dict[str, Any]) -> str:
    images = prompt.get("images") or []
    return (f"[{len(images)} image{'s' if len(images) > 1 else ''}] " if images else "") + prompt.get("text", "")


def _answer_cell(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return ""
    return f"[error] {answer['error']}" if answer.get("error") else answer.get("text", "")


def _csv(db: Database, chat_id: int) -> str:
    table = compare_table(db, chat_id)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(table["headers"])
    writer.writerows(table["rows"])
    return buf.getvalue()


def _jsonl(view: dict[str, Any]) -> str:
    lines = []
    for row in view["rows"]:
        answers = {c["label"]: row["answers"].get(c["key"]) for c in view["columns"]}
        lines.append(json.dumps({"prompt": row["prompt"], "answers": answers}, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")
