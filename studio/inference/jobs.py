"""Chat jobs, run by the worker inside its own process (kinds ``chat.message`` and ``chat.compare``).

Each worker owns ONE :class:`ChatEngine` in its services (``ctx.services.chat_engine``, see
``jobs.services``), created on the first chat job and kept between jobs: the base model stays
loaded from one message to the next. This module is only imported by the worker (the job table
names handlers as strings), never by the UI, so the engine is not shared across UI users.

When another job needs the memory the chat model holds, the worker releases it
(``WorkerServices.release``); the next chat loads it again.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from jobs.context import JobCancelled, JobContext
from storage.db import Database
from storage.models import Chat, ModelEntry

from . import adapters, transcript
from .engine import ChatEngine
from .errors import BaseModelError, PaneError
from .progress import DONE, STOPPED, PaneProgress
from .settings import ChatSettings, parse_settings

log = logging.getLogger("studio.inference")

CANCEL_POLL_S = 0.1  # how often generation re-reads the cancel flag: "stop" acts within ~0.1 s
NOT_STARTED = "not answered: generation was stopped before this pane's turn"


# -- chat.message -----------------------------------------------------------------------------------
def run_chat_job(ctx: JobContext) -> dict[str, Any]:
    """Answer one user message in every pane of a side-by-side chat, streaming into the job row."""
    chat_id, message = int(ctx.payload["chat_id"]), ctx.payload["message"]
    chat = _load_chat(ctx.db, chat_id)
    settings = parse_settings(chat.settings)
    panes = chat.transcript["panes"]
    progress = PaneProgress(ctx, panes)
    ctx.cancel_poll_s = CANCEL_POLL_S
    engine = ctx.services.chat_engine_for(ctx.payload.get("device"))  # "cpu": sent there by the user
    try:
        _ensure_base(ctx, engine, chat.base_model_ref, progress)
    except BaseModelError as e:
        replies = {p["key"]: _error_reply(ctx, str(e)) for p in panes}
        for p in panes:
            progress.fail(p["key"], str(e))
        _save_turn(ctx.db, chat_id, ctx.job_id, message, replies)
        raise
    replies = {}
    for pane in panes:
        replies[pane["key"]] = _answer_pane(ctx, engine, pane, message, settings, progress)
    _save_turn(ctx.db, chat_id, ctx.job_id, message, replies)
    if any(r["meta"].get("stopped") for r in replies.values()):
        progress.status("stopped")
        raise JobCancelled("stopped by the user; the partial answers were kept")
    progress.status("done")
    return {"chat_id": chat_id, "panes": {k: r["meta"] for k, r in replies.items()}}


def _answer_pane(ctx: JobContext, engine: ChatEngine, pane: dict[str, Any], message: dict[str, Any],
                 settings: ChatSettings, progress: PaneProgress) -> dict[str, Any]:
    key = pane["key"]
    if ctx.cancelled():
        progress.fail(key, NOT_STARTED)
        return _error_reply(ctx, NOT_STARTED, stopped=True)
    progress.start(key)
    try:
        history = transcript.prompt_history(pane["messages"] + [message], _image_resolver(ctx.db))
        adapter = adapters.resolve(ctx.db, pane["adapter_id"]) if pane.get("adapter_id") is not None else None
        reply = engine.generate(history, settings, adapter=adapter, on_text=progress.text_sink(key),
                                should_stop=ctx.cancelled)
    except PaneError as e:
        progress.fail(key, str(e))
        return _error_reply(ctx, str(e))
    except Exception as e:  # the engine must keep serving the other panes and the next message
        log.exception("pane %s of job %s failed", key, ctx.job_id)
        error = _unexpected(e)
        progress.fail(key, error)
        return _error_reply(ctx, error)
    meta = {**reply.meta(), "job_id": ctx.job_id, "error": None}
    progress.finish(key, reply.text, STOPPED if reply.stopped else DONE, meta)
    return transcript.assistant_message(reply.text, meta)


def _save_turn(db: Database, chat_id: int, job_id: int, message: dict[str, Any],
               replies: dict[str, dict[str, Any]]) -> None:
    """Append the user message and every pane's reply in one commit: a reader sees all or nothing."""
    with db.session() as s:
        chat = s.get(Chat, chat_id)
        if chat is None:  # deleted while we answered
            return
        data = copy.deepcopy(chat.transcript)
        for pane in data["panes"]:
            if pane["key"] in replies:
                pane["messages"].extend([copy.deepcopy(message), replies[pane["key"]]])
        if (data.get("pending") or {}).get("job_id") == job_id:
            data["pending"] = None
        chat.transcript = data  # a new object, so SQLAlchemy sees the JSON change


# -- chat.compare -----------------------------------------------------------------------------------
def run_compare_job(ctx: JobContext) -> dict[str, Any]:
    """Run every prompt of a batch comparison through the base model and each adapter (row by row,
    so the first rows of the table are complete early)."""
    chat_id = int(ctx.payload["chat_id"])
    chat = _load_chat(ctx.db, chat_id)
    settings = parse_settings(chat.settings, compare=True)
    columns, rows = chat.transcript["columns"], chat.transcript["rows"]
    ctx.cancel_poll_s = CANCEL_POLL_S
    engine = ctx.services.chat_engine_for(ctx.payload.get("device"))  # "cpu": sent there by the user
    progress = PaneProgress(ctx, [])  # answers go to the transcript; the job row carries the status only
    try:
        _ensure_base(ctx, engine, chat.base_model_ref, progress)
    except BaseModelError as e:
        failed = {(i, c["key"]): _compare_error(str(e)) for i in range(len(rows)) for c in columns}
        _save_answers(ctx.db, chat_id, failed)
        raise
    adapter_refs, broken = _compare_adapters(ctx.db, engine, columns)
    total, done = len(rows) * len(columns), 0
    for i, row in enumerate(rows):
        answers: dict[tuple[int, str], dict[str, Any]] = {}
        try:
            for col in columns:
                ctx.check_cancel()  # answers so far are saved; the table shows the rest as missing
                key = col["key"]
                progress.status(f"prompt {i + 1}/{len(rows)}: {col['label']}")
                answers[(i, key)] = (_compare_error(broken[key]) if key in broken else
                                     _compare_answer(ctx, engine, row["prompt"], settings, adapter_refs.get(key)))
                done += 1
                ctx.progress(done / total)
        finally:
            _save_answers(ctx.db, chat_id, answers)
    progress.status("done")
    return {"chat_id": chat_id, "answers": done}


def _compare_adapters(db: Database, engine: ChatEngine, columns: list[dict[str, Any]]):
    """Resolve and check each column's adapter once: a bad one fills its column with its message."""
    refs, broken = {}, {}
    for col in columns:
        if col.get("adapter_id") is None:
            continue
        try:
            ref = adapters.resolve(db, col["adapter_id"])
            engine.check_adapter(ref)
            refs[col["key"]] = ref
        except PaneError as e:
            broken[col["key"]] = str(e)
    return refs, broken


def _compare_answer(ctx: JobContext, engine: ChatEngine, prompt: dict[str, Any], settings: ChatSettings,
                    adapter: adapters.AdapterRef | None) -> dict[str, Any]:
    message = transcript.user_message(prompt.get("text", ""), prompt.get("images", []))
    history = transcript.prompt_history([message], _image_resolver(ctx.db))
    if prompt.get("system"):  # a dataset row's own system prompt wins, as in training
        settings = settings.model_copy(update={"system_prompt": prompt["system"]})
    try:
        reply = engine.generate(history, settings, adapter=adapter, should_stop=ctx.cancelled)
    except PaneError as e:
        return _compare_error(str(e))
    except Exception as e:
        log.exception("compare answer of job %s failed", ctx.job_id)
        return _compare_error(_unexpected(e))
    if reply.stopped:
        raise JobCancelled("stopped by the user; the answers so far were kept")
    return {"text": reply.text, "error": None, **reply.meta()}


def _compare_error(error: str) -> dict[str, Any]:
    return {"text": "", "error": error}


def _save_answers(db: Database, chat_id: int, answers: dict[tuple[int, str], dict[str, Any]]) -> None:
    with db.session() as s:
        chat = s.get(Chat, chat_id)
        if chat is None:
            return
        data = copy.deepcopy(chat.transcript)
        for (i, key), answer in answers.items():
            data["rows"][i]["answers"][key] = answer
        chat.transcript = data


# -- shared -----------------------------------------------------------------------------------------
def _load_chat(db: Database, chat_id: int) -> Chat:
    with db.session() as s:
        chat = s.get(Chat, chat_id)
        if chat is None:
            raise LookupError(f"chat {chat_id} does not exist (deleted?)")
        return chat


def _ensure_base(ctx: JobContext, engine: ChatEngine, ref: str, progress: PaneProgress) -> None:
    if engine.base_ref != ref:
        progress.status(f"loading the base model {ref}")
    engine.ensure_base(ref, trust_remote_code=_trusted(ctx.db, ref),
                       progress=lambda f, m: progress.status(f"loading the base model: {m}"))


def _trusted(db: Database, ref: str) -> bool:
    """The per-model opt-in to run a model's own code (off unless the user enabled it for this model)."""
    from sqlalchemy import select

    with db.session() as s:
        return bool(s.execute(select(ModelEntry.trust_remote_code).where(ModelEntry.ref == ref)).scalar())


def _image_resolver(db: Database):
    from storage.workspace import OutsideWorkspaceError

    def resolve(path: str) -> str:
        try:
            return str(db.workspace.confine(path))
        except OutsideWorkspaceError as e:
            raise PaneError(str(e)) from None
    return resolve


def _error_reply(ctx: JobContext, error: str, stopped: bool = False) -> dict[str, Any]:
    return transcript.assistant_message("", {"job_id": ctx.job_id, "error": error, "stopped": stopped})


def _unexpected(e: Exception) -> str:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return ("out of GPU memory while answering: lower 'max new tokens', use smaller images, or start a new "
                "chat (a long history costs memory).")
    return f"internal error while answering ({type(e).__name__}: {e}); the other panes were not affected."

