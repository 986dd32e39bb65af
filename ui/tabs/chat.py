"""Chat tab: the base model and up to three adapters side by side, streamed from the worker.

The UI never loads a model: a message is a job, and a generator polls the job's row and streams
each pane's partial text into its Chatbot. Every chat is saved and can be reopened.
"""
from __future__ import annotations

from typing import Any

import difflib
import html

import gradio as gr
import pandas as pd

from storage.db import Database
from studio import activity
from studio.inference import service as chat
from studio.inference.errors import ChatError
from studio.inference.settings import MAX_ADAPTERS, ChatSettings, SettingsError
from studio.training import history
from ui import spec_widgets
from ui.i18n import add, choices, localize, t
from ui.tabs import chat_memory

POLL_S = 0.2
JOB_TIMEOUT_S = 6 * 3600  # a chat may wait behind a long training run; the page stops following after this
PANES = MAX_ADAPTERS + 1

add("chat.intro", "Send the same message to the base model and to your adapters; the answers stream side by side. "
    "Every pane uses the same settings and seed, so differences come from the adapter. Temperature 0 = greedy.",
    "将同一条消息发送给基础模型和适配器，回答并排流式显示。所有窗格使用相同的设置和随机种子，差异只来自适配器。温度 0 = 贪心解码。")
add("chat.base", "Base model", "基础模型")
add("chat.adapters", f"Adapters (up to {MAX_ADAPTERS})", f"适配器（最多 {MAX_ADAPTERS} 个）")
add("chat.settings", "Generation settings", "生成设置")
add("chat.system", "System prompt (empty: the model's default)", "系统提示词（留空使用模型默认）")
add("chat.max_new", "Max new tokens", "最大新 token 数")
add("chat.temperature", "Temperature", "温度")
add("chat.top_p", "Top-p", "Top-p")
add("chat.top_k", "Top-k (0 = off)", "Top-k（0 = 关闭）")
add("chat.rep", "Repetition penalty", "重复惩罚")
add("chat.seed", "Seed", "随机种子")
add("chat.max_pixels", "Max pixels per image (vision models)", "每张图片最大像素（视觉模型）")
add("chat.input", "Message (attach images for vision models)", "消息（视觉模型可附加图片）")
add("chat.send", "Send", "发送")
add("chat.short_run_hint", "Panes that look alike usually mean the adapter changed little: a few steps or a high final "
    "loss barely move a model. Train longer, or on more rows, then compare again.",
    "各窗格看起来相同，通常说明适配器改变很小：只训练几步或最终损失仍高时模型几乎不变。请训练更久或使用更多数据后再对比。")
add("chat.differences", "What the adapters changed (words not in the base model's answer are marked)",
    "适配器改变了什么（基础模型回答中没有的词会被标出）")
add("chat.stop", "Stop", "停止")
add("chat.new", "New chat", "新对话")
add("chat.saved", "Reopen a saved chat", "打开已保存的对话")
add("chat.compare", "Batch compare", "批量对比")
add("chat.prompts", "Prompts (one per line)", "提示词（每行一个）")
add("chat.or_dataset", "…or the prompts of a dataset", "……或使用数据集中的提示词")
add("chat.split", "Split", "数据划分")
add("chat.limit", "At most N prompts", "最多 N 条提示词")
add("chat.run_compare", "Run comparison", "运行对比")
add("chat.answers", "Answers side by side", "并排的回答")
add("chat.download", "Download CSV", "下载 CSV")
add("chat.download_jsonl", "Download JSONL", "下载 JSONL")


# -- view helpers -----------------------------------------------------------------------------------
def base_choices(db: Database) -> list[tuple[str, str]]:
    from ui.tabs.train import model_choices

    seen = {ref for _, ref in model_choices()}
    used = [(a["base"], a["base"]) for a in history.adapters(db) if a["base"] not in seen]
    return model_choices() + sorted(set(used))


def adapter_choices(db: Database, base_ref: str | None) -> list[tuple[str, int]]:
    """The adapters that write answers: a reward model only scores them (it has no pane)."""
    return [(a["label"], a["id"]) for a in history.adapters(db, base_ref or None) if a["stage"] != "reward"]


def _content(part: dict[str, Any], db: Database) -> Any:
    if part.get("type") == "image":
        return {"path": str(db.workspace.root / part["image"])}
    return part.get("text", "")


def pane_messages(db: Database, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transcript messages -> Chatbot messages (one bubble per part; images as files)."""
    out = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        for part in parts:
            out.append({"role": m["role"], "content": _content(part, db)})
        meta = m.get("meta") or {}
        if m["role"] == "assistant" and meta.get("error"):
            out.append({"role": "assistant", "content": f"⚠️ {meta['error']}"})
    return out


def panes_view(db: Database, chat_id: int | None, live: dict | None = None) -> list[Any]:
    """For each of the PANES chatbots: an update with its label, history and visibility."""
    if not chat_id:
        return [gr.update(visible=i == 0, value=[], label="Base model") for i in range(PANES)]
    view = chat.get_chat(db, chat_id)
    updates = []
    for i in range(PANES):
        if i >= len(view["panes"]):
            updates.append(gr.update(visible=False, value=[]))
            continue
        pane = view["panes"][i]
        messages = pane_messages(db, pane["messages"])
        if live is not None:
            messages += pane_messages(db, [live["message"]])
            state = live["panes"].get(pane["key"], {})
            text = state.get("text") or ("…" if state.get("state") in ("waiting", "generating") else "")
            if state.get("error"):
                text = f"{text}\n\n⚠️ {state['error']}".strip()
            messages.append({"role": "assistant", "content": text})
        updates.append(gr.update(visible=True, value=messages, label=pane["label"]))
    return updates


def adapter_summaries(db: Database, base_ref: str | None, adapter_ids) -> str:
    """One line per chosen adapter: how it was trained, so identical-looking panes have a reason."""
    known = {a["id"]: a for a in history.adapters(db, base_ref or None)}
    lines = [f"- **{known[int(i)]['label']}**: {known[int(i)]['summary']}" for i in adapter_ids or [] if int(i) in known]
    return "\n".join(lines)


def differences_html(db: Database, chat_id: int | None) -> str:
    """The last answer of each adapter pane against the base pane's: words the adapter added are
    marked, with how similar the two answers are (1.0 = identical)."""
    if not chat_id:
        return ""
    view = chat.get_chat(db, int(chat_id))
    answers = [(p["label"], _last_answer(p["messages"])) for p in view["panes"]]
    if len(answers) < 2 or answers[0][1] is None:
        return ""
    base = answers[0][1].split()
    rows = []
    for label, text in answers[1:]:
        if text is None:
            continue
        words = text.split()
        matcher = difflib.SequenceMatcher(a=base, b=words, autojunk=False)
        marked = []
        for op, _, _, j1, j2 in matcher.get_opcodes():
            chunk = html.escape(" ".join(words[j1:j2]))
            marked.append(chunk if op == "equal" else f"<mark>{chunk}</mark>" if chunk else "")
        rows.append(f"<div><b>{html.escape(label)}</b> · similarity to the base {matcher.ratio():.2f}"
                    f"<div class='chat-diff'>{' '.join(m for m in marked if m)}</div></div>")
    return "".join(rows)


def _last_answer(messages: list[dict[str, Any]]) -> str | None:
    for m in reversed(messages):
        if m.get("role") == "assistant":
            content = m.get("content")
            return content if isinstance(content, str) else " ".join(
                p.get("text", "") for p in content or [] if p.get("type") == "text")
    return None


def empty_panes(db: Database, base_ref: str | None, adapter_ids) -> list[Any]:
    """Labelled, empty panes for the chosen base and adapters (before the first message)."""
    labels = {a["id"]: a["label"] for a in history.adapters(db, base_ref or None)}
    names = ["Base model"] + [labels.get(int(a), f"adapter #{a}") for a in adapter_ids or []]
    return [gr.update(visible=i < len(names), value=[], label=names[i] if i < len(names) else "")
            for i in range(PANES)]


# The chat settings the tab shows, with their labels: the controls are generated from ChatSettings
# (bounds, help); the tab starts greedy without a repetition penalty, so panes differ only by adapter.
SETTINGS_LABELS = {"system_prompt": "chat.system", "max_new_tokens": "chat.max_new", "temperature": "chat.temperature",
                   "top_p": "chat.top_p", "top_k": "chat.top_k", "repetition_penalty": "chat.rep", "seed": "chat.seed",
                   "max_pixels": "chat.max_pixels"}
UI_DEFAULTS = {"temperature": 0.0, "repetition_penalty": 1.0}
SETTINGS_ROWS = [("system_prompt",), ("max_new_tokens", "temperature", "top_p"),
                 ("top_k", "repetition_penalty", "seed", "max_pixels")]


def settings_from(values: dict[str, Any]) -> dict[str, Any]:
    """ChatSettings fields from the settings controls' values, keyed by field name."""
    out = dict(values)
    out["system_prompt"] = out["system_prompt"] or ""
    for k in ("max_new_tokens", "top_k", "seed", "max_pixels"):
        out[k] = int(out[k])
    out["min_pixels"] = min(ChatSettings().min_pixels, out["max_pixels"])
    return out


def ensure_chat(db: Database, chat_id, base_ref, adapter_ids, settings) -> int:
    """Reuse the open chat if it has the same base and adapters; else start a new one."""
    adapter_ids = [int(a) for a in adapter_ids or []]
    if chat_id:
        view = chat.get_chat(db, int(chat_id))
        if view["base_model_ref"] == base_ref and list(view["adapter_ids"]) == adapter_ids:
            chat.update_settings(db, int(chat_id), settings)
            return int(chat_id)
    return chat.create_chat(db, base_ref, adapter_ids, settings)


def send(db: Database, chat_id, base_ref, adapter_ids, message, settings_values: dict[str, Any]):
    """Generator: queue the message, then stream every pane until the job ends.
    Yields (chat_id, job_id, status line, input box, *pane updates)."""
    text = (message or {}).get("text", "") if isinstance(message, dict) else (message or "")
    files = (message or {}).get("files", []) if isinstance(message, dict) else []
    try:
        chat_id = ensure_chat(db, chat_id, base_ref, adapter_ids, settings_from(settings_values))
        job_id = chat.send_message(db, chat_id, text, files)
    except (ChatError, SettingsError, ValueError) as e:
        yield chat_id, None, f"⚠️ {e}", gr.update(), *panes_view(db, chat_id)
        return
    live = chat.get_chat(db, chat_id)["pending_message"]
    for state in activity.poll_until(lambda: chat.poll(db, job_id), lambda st: st["done"], POLL_S, JOB_TIMEOUT_S):
        if state["done"]:
            break
        yield chat_id, job_id, state["message"], gr.update(value=None), *panes_view(
            db, chat_id, {"message": live, "panes": state["panes"]})
    note = f"⚠️ {state['error']}" if state["error"] else ("Stopped." if state["status"] == "cancelled" else "")
    yield chat_id, None, note, gr.update(value=None), *panes_view(db, chat_id)


def saved_choices(db: Database) -> list[tuple[str, int]]:
    return [(f"#{c['id']} {c['title'] or 'untitled'} ({c['kind']})", c["id"]) for c in chat.list_chats(db)]


def compare_frame(db: Database, chat_id: int, request: gr.Request | None = None) -> pd.DataFrame:
    table = chat.compare_table(db, chat_id)
    return localize(pd.DataFrame(table["rows"], columns=table["headers"]), request)


def run_compare(db: Database, base_ref, adapter_ids, prompts_text, dataset_id, split, limit,
                settings_values: dict[str, Any], request: gr.Request | None = None):
    """Generator: queue the comparison and fill the table as answers arrive."""
    prompts = [p for p in (prompts_text or "").splitlines() if p.strip()]
    try:
        settings = settings_from(settings_values)
        chat_id, job_id = chat.create_compare(
            db, base_ref, [int(a) for a in adapter_ids or []], prompts,
            dataset_id=int(dataset_id) if dataset_id and not prompts else None, split=split, limit=int(limit),
            settings={k: v for k, v in settings.items() if k not in ("temperature", "repetition_penalty")})
    except (ChatError, SettingsError, ValueError, LookupError) as e:
        yield f"⚠️ {e}", gr.update(), None, None
        return
    for state in activity.poll_until(lambda: chat.poll(db, job_id), lambda st: st["done"], 1.0, JOB_TIMEOUT_S):
        yield state["message"], compare_frame(db, chat_id, request), None, None
    note = f"⚠️ {state['error']}" if state["error"] else f"Comparison #{chat_id} saved."
    yield (note, compare_frame(db, chat_id, request), str(chat.export_compare(db, chat_id, "csv")),
           str(chat.export_compare(db, chat_id, "jsonl")))


# -- layout -----------------------------------------------------------------------------------------
def render(db: Database) -> dict:
    gr.Markdown(t("chat.intro"))
    chat_id = gr.State(None)
    job_id = gr.State(None)
    with gr.Row():
        bases = base_choices(db)
        base = gr.Dropdown(label=t("chat.base"), choices=bases, value=bases[0][1], allow_custom_value=True, scale=2,
                           elem_id="chat-base")
        adapters = gr.Dropdown(label=t("chat.adapters"), choices=adapter_choices(db, bases[0][1]), multiselect=True,
                               max_choices=MAX_ADAPTERS, scale=3, elem_id="chat-adapters")
        saved = gr.Dropdown(label=t("chat.saved"), choices=saved_choices(db), scale=2)
    settings: dict[str, Any] = {}
    with gr.Accordion(t("chat.settings"), open=False):
        for row in SETTINGS_ROWS:
            with gr.Row():
                for name in row:
                    settings[name] = spec_widgets.widget(ChatSettings, name, t(SETTINGS_LABELS[name]),
                                                         value=UI_DEFAULTS.get(name))
    summary = gr.Markdown(elem_id="chat-summary")
    gr.Markdown(t("chat.short_run_hint"), elem_classes=["chat-hint"])
    with gr.Row(equal_height=True):
        panes = [gr.Chatbot(label="Base model", height=420, visible=i == 0, elem_id=f"chat-pane-{i}")
                 for i in range(PANES)]
    status = gr.Markdown(elem_id="chat-status")
    offer, offer_text, wait_btn, cpu_btn = chat_memory.render()  # a chat that does not fit beside a run
    with gr.Accordion(t("chat.differences"), open=True):
        differences = gr.HTML(elem_id="chat-differences")
    with gr.Row():
        message = gr.MultimodalTextbox(label=t("chat.input"), file_types=["image"], file_count="multiple",
                                       scale=6, elem_id="chat-input", submit_btn=False)
        with gr.Column(scale=1, min_width=120):
            send_btn = gr.Button(t("chat.send"), variant="primary", elem_id="chat-send")
            stop_btn = gr.Button(t("chat.stop"), variant="stop")
            new_btn = gr.Button(t("chat.new"))

    def _send(cid, b, a, m, *values):
        for out in send(db, cid, b, a, m, dict(zip(settings, values))):
            yield (*out, *chat_memory.offer_updates(db, out[1]))

    send_outputs = [chat_id, job_id, status, message, *panes, offer, offer_text]
    for trigger in (send_btn.click, message.submit):
        sent = trigger(_send, inputs=[chat_id, base, adapters, message, *settings.values()], outputs=send_outputs,
                       api_name="send_message" if trigger == send_btn.click else False)
        # once the answers are in: what each adapter changed against the base
        sent.then(lambda cid: differences_html(db, cid), inputs=chat_id, outputs=differences,
                  api_visibility="private")
    chat_memory.wire(db, job_id, offer, status, wait_btn, cpu_btn)
    stop_btn.click(lambda j: chat.stop(db, int(j)) and "Stopping…" if j else "", inputs=job_id, outputs=status,
                   api_name="stop_chat")
    new_btn.click(lambda: (None, "", *panes_view(db, None)), outputs=[chat_id, status, *panes], api_name="new_chat")
    def _base_changed(b, chosen):
        choices = adapter_choices(db, b)
        keep = [a for a in chosen or [] if a in {v for _, v in choices}]  # e.g. set together by "chat with this run"
        return gr.update(choices=choices, value=keep), None

    base.change(_base_changed, inputs=[base, adapters], outputs=[adapters, chat_id], api_visibility="private")

    def _reopen(cid):
        if not cid:
            return gr.update(), gr.update(), None, *panes_view(db, None)
        view = chat.get_chat(db, int(cid))
        if view["kind"] != "chat":
            return gr.update(), gr.update(), None, *panes_view(db, None)
        return (view["base_model_ref"], gr.update(choices=adapter_choices(db, view["base_model_ref"]),
                                                  value=list(view["adapter_ids"])), int(cid), *panes_view(db, int(cid)))

    adapters.change(lambda b, a, cid: empty_panes(db, b, a) if not cid else [gr.update()] * PANES,
                    inputs=[base, adapters, chat_id], outputs=panes, api_visibility="private")
    adapters.change(lambda b, a: adapter_summaries(db, b, a), inputs=[base, adapters], outputs=summary,
                    api_visibility="private")
    saved.change(_reopen, inputs=saved, outputs=[base, adapters, chat_id, *panes], api_name="reopen_chat")

    with gr.Accordion(t("chat.compare"), open=False):
        with gr.Row():
            prompts = gr.Textbox(label=t("chat.prompts"), lines=4, scale=3)
            with gr.Column(scale=2):
                from ui.tabs.datasets import dataset_choices

                dataset = gr.Dropdown(label=t("chat.or_dataset"), choices=dataset_choices(db))
                with gr.Row():
                    split = gr.Radio(label=t("chat.split"), choices=choices(["validation", "train"]), value="validation")
                    limit = gr.Number(label=t("chat.limit"), value=20, precision=0, minimum=1, maximum=500)
        compare_btn = gr.Button(t("chat.run_compare"), variant="primary")
        compare_status = gr.Markdown()
        table = gr.Dataframe(label=t("chat.answers"), wrap=True, interactive=False)
        with gr.Row():
            csv_file = gr.File(label=t("chat.download"), interactive=False)
            jsonl_file = gr.File(label=t("chat.download_jsonl"), interactive=False)

    def _compare(request: gr.Request, b, a, p, ds, sp, lim, *values):  # the request first: *values takes the rest
        yield from run_compare(db, b, a, p, ds, sp, lim, dict(zip(settings, values)), request)

    compare_btn.click(_compare, inputs=[base, adapters, prompts, dataset, split, limit, *settings.values()],
                      outputs=[compare_status, table, csv_file, jsonl_file], api_name="run_compare")
    from ui.tabs import judge

    judge_parts = judge.render(db, base, settings)
    return {"base": base, "adapters": adapters, "saved": saved, "dataset": dataset, "panes": panes, "chat_id": chat_id,
            "judge": judge_parts}


def select_run(db: Database, run_id) -> tuple[Any, ...]:
    """For 'chat with this run': the run's base model, its adapter preselected, a fresh chat."""
    return select_runs(db, [run_id] if run_id else [])


def select_runs(db: Database, run_ids) -> tuple[Any, ...]:
    """For 'chat with these runs' (a comparison): the first run's base model, the adapters of the runs
    on that base (up to MAX_ADAPTERS, in the runs' order) preselected, a fresh chat."""
    from studio.training import service as training

    if not run_ids:
        return gr.update(), gr.update(), gr.update(), *[gr.update()] * PANES
    base = training.get_run(db, int(run_ids[0])).model_ref
    newest = {a["run_id"]: a["id"] for a in reversed(history.adapters(db, base))  # a run's newest adapter
              if a["stage"] != "reward"}  # a reward model writes no answers: no pane
    ids = [newest[int(r)] for r in run_ids if int(r) in newest][:MAX_ADAPTERS]
    return (base, gr.update(choices=adapter_choices(db, base), value=ids), None, *empty_panes(db, base, ids))
