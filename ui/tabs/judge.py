"""Blind A/B judging inside the Chat tab: two of {base, adapters} answer the same prompts, shown as
A and B in a hidden random order; pick A, B, tie or both bad (keys 1, 2, 0); the identities show
after the pick. A scoreboard per pair, export to a preference dataset or JSONL, and "train on my
judgements" (a DPO spec in the Train tab, continuing the winning adapter)."""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from storage.db import Database
from studio import activity
from studio.inference import judging
from studio.inference import service as chat
from studio.inference.errors import ChatError
from studio.inference.settings import SettingsError
from ui.i18n import add, localize, localized, t

POLL_S = 0.5
JOB_TIMEOUT_S = 6 * 3600

add("judge.title", "Blind A/B judging", "盲评 A/B 对比")
add("judge.intro", "Two models answer the same prompts; you see them as A and B in random order and pick the "
    "better answer (keys 1 = A, 2 = B, 0 = tie). Who was who shows after each pick. Your judgements build a "
    "scoreboard and a preference dataset to train on (DPO).",
    "两个模型回答相同的提示词；它们以随机顺序显示为 A 和 B，由你选出更好的回答（按键 1 = A，2 = B，0 = 平局）。"
    "每次选择后才显示各是哪个模型。你的评判会形成排行榜和偏好数据集，可用于训练（DPO）。")
add("judge.model_x", "First model", "第一个模型")
add("judge.model_y", "Second model", "第二个模型")
add("judge.prompts", "Prompts to judge (one per line)", "要评判的提示词（每行一个）")
add("judge.start", "Start judging", "开始评判")
add("judge.answer_a", "Answer A", "回答 A")
add("judge.answer_b", "Answer B", "回答 B")
add("judge.edit", "Improve the better answer (optional): your text becomes the chosen answer",
    "改进更好的回答（可选）：你的文字将作为被选中的回答")
add("judge.pick_a", "A is better (1)", "A 更好 (1)")
add("judge.pick_b", "B is better (2)", "B 更好 (2)")
add("judge.tie", "Tie (0)", "平局 (0)")
add("judge.both_bad", "Both bad", "都不好")
add("judge.scoreboard", "Scoreboard", "排行榜")
add("judge.refresh", "Refresh scoreboard", "刷新排行榜")
add("judge.dataset_name", "Dataset name", "数据集名称")
add("judge.export_dataset", "Save judgements as a preference dataset", "将评判保存为偏好数据集")
add("judge.export_jsonl", "Download judgements (JSONL)", "下载评判（JSONL）")
add("judge.train", "Train on my judgements (DPO)", "用我的评判训练（DPO）")

SCORE_COLUMNS = ["Base model", "Model 1", "Model 2", "Judgements", "Model 1 wins", "Model 2 wins", "Ties", "Both bad",
                 "Model 1 win rate (95% CI)"]
# keys 1/2/0 press the pick buttons, unless the person is typing
SHORTCUTS_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const tag = (e.target && e.target.tagName || '').toLowerCase();
  if (tag === 'input' || tag === 'textarea' || e.target.isContentEditable || e.ctrlKey || e.metaKey || e.altKey) return;
  const id = {'1': 'judge-pick-a', '2': 'judge-pick-b', '0': 'judge-pick-tie'}[e.key];
  const button = id && document.getElementById(id);
  if (button && button.offsetParent !== null) { e.preventDefault(); button.click(); }
});
</script>
"""


# -- plain functions (tested through gradio_client) ------------------------------------------------
def model_choices(db: Database, base_ref: str | None) -> list[tuple[str, str]]:
    return judging.candidates(db, base_ref) if base_ref else []


def start(db: Database, base_ref: str, x: str, y: str, prompts_text: str, settings: dict[str, Any]):
    """Yields (session, index, status, prompt, A, B, reveal) while the answers are made, then the first row."""
    prompts = [p.strip() for p in (prompts_text or "").splitlines() if p.strip()]
    try:
        session, job_id = judging.start(db, base_ref, [x, y], prompts, settings=settings)
    except (ChatError, SettingsError, ValueError, LookupError) as e:
        yield None, 0, f"⚠️ {e}", "", "", "", ""
        return
    state = {"error": None}
    for state in activity.poll_until(lambda: chat.poll(db, job_id), lambda st: st["done"], POLL_S, JOB_TIMEOUT_S):
        yield session, 0, state["message"], "", "", "", ""
    if state.get("error"):
        yield session, 0, f"⚠️ {state['error']}", "", "", "", ""
        return
    yield (session, 0, *show(db, session, 0))


def show(db: Database, session, index) -> tuple[str, str, str, str, str]:
    """(status, prompt, A, B, reveal) of a row."""
    if session is None:
        return "", "", "", "", ""
    row = judging.duel(db, int(session), int(index))
    status = f"Prompt {row['index'] + 1} of {row['total']}"
    reveal = ""
    if row["reveal"]:
        reveal = f"You picked **{row['pick']}** — A was **{row['reveal']['a']}**, B was **{row['reveal']['b']}**."
    return status, f"**{row['prompt']}**", row["a"], row["b"], reveal


def pick(db: Database, session, index, choice: str, edited: str):
    """Store the pick, reveal who was who, and move to the next unjudged prompt.
    Returns (index, status, prompt, A, B, reveal, edited box)."""
    if session is None:
        return index, "Start a judging session first.", gr.update(), gr.update(), gr.update(), "", gr.update()
    try:
        done = judging.judge(db, int(session), int(index), choice, edited)
    except ChatError as e:
        return index, f"⚠️ {e}", gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
    reveal = (f"Prompt {done['index'] + 1}: you picked **{choice}** — A was **{done['reveal']['a']}**, "
              f"B was **{done['reveal']['b']}**.")
    following = judging.next_unjudged(db, int(session))
    if following is None:
        return index, f"All {done['total']} prompts judged.", gr.update(), gr.update(), gr.update(), reveal, ""
    status, prompt, a, b, _ = show(db, session, following)
    return following, status, prompt, a, b, reveal, ""


def scoreboard_frame(db: Database) -> pd.DataFrame:
    rows = []
    for s in judging.scoreboard(db):
        rate = "—" if s.win_rate is None else f"{s.win_rate:.0%} ({s.ci_low:.0%}–{s.ci_high:.0%})"
        rows.append([s.base_model_ref, s.first_label, s.second_label, s.judgements, s.first_wins, s.second_wins,
                     s.ties, s.both_bad, rate])
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def session_pair(db: Database, session) -> tuple[str, list[str]]:
    view = chat.get_chat(db, int(session))
    return view["base_model_ref"], judging._session(db, int(session))["models"]


def export_dataset(db: Database, session, name: str) -> str:
    if session is None:
        return "Start a judging session first."
    base_ref, pair = session_pair(db, session)
    try:
        dataset, left_out = judging.export_dataset(db, name, base_ref, pair)
    except ChatError as e:
        return f"⚠️ {e}"
    return f"Saved as preference dataset #{dataset.id} {dataset.name} ({dataset.num_rows} pairs){_note(left_out)}."


def export_jsonl(db: Database, session) -> tuple[str, str | None]:
    if session is None:
        return "Start a judging session first.", None
    base_ref, pair = session_pair(db, session)
    try:
        path, n, left_out = judging.export_jsonl(db, chat.chat_dir(db, int(session)) / "judgements.jsonl",
                                                 base_ref, pair)
    except ChatError as e:
        return f"⚠️ {e}", None
    return f"{n} pairs written{_note(left_out)}.", str(path)


def train_on_judgements(db: Database, session, name: str) -> tuple[dict[str, Any] | None, str]:
    """(the DPO spec to open in the Train tab, message): the pairs become a dataset, the winner of
    the pair (an adapter) is the adapter to continue."""
    if session is None:
        return None, "Start a judging session first."
    base_ref, pair = session_pair(db, session)
    try:
        dataset, left_out = judging.export_dataset(db, name or "my judgements", base_ref, pair)
    except ChatError as e:
        return None, f"⚠️ {e}"
    score = next((s for s in judging.scoreboard(db, base_ref) if {s.first, s.second} == set(pair)), None)
    winner = judging.leader(score) if score else None
    spec = judging.dpo_spec(db, dataset.id, base_ref, winner)
    start_note = f", continuing {judging.model_label(db, winner)}" if winner and winner != judging.BASE else ""
    return spec, f"DPO on dataset #{dataset.id} ({dataset.num_rows} pairs){start_note}: check the settings and start."


def _note(left_out: dict[str, int]) -> str:
    parts = [f"{n} {why.replace('_', ' ')}" for why, n in left_out.items() if n]
    return f"; left out: {', '.join(parts)}" if parts else ""


# -- layout --------------------------------------------------------------------------------------------
def render(db: Database, base: gr.Dropdown, settings: dict[str, Any]) -> dict:
    """Inside the Chat tab; ``base`` and ``settings`` are the tab's base model and generation controls."""
    session, index = gr.State(None), gr.State(0)
    with gr.Accordion(t("judge.title"), open=False, elem_id="judge-box"):
        gr.Markdown(t("judge.intro"))
        with gr.Row():
            first = model_choices(db, base.value)
            # custom values: adapters trained after the page loaded (judging.start checks every name)
            model_x = gr.Dropdown(label=t("judge.model_x"), choices=first, value=first[0][1] if first else None,
                                  allow_custom_value=True, elem_id="judge-model-x")
            model_y = gr.Dropdown(label=t("judge.model_y"), choices=first, allow_custom_value=True,
                                  value=first[1][1] if len(first) > 1 else None, elem_id="judge-model-y")
        prompts = gr.Textbox(label=t("judge.prompts"), lines=4, elem_id="judge-prompts")
        start_btn = gr.Button(t("judge.start"), variant="primary", elem_id="judge-start")
        status = gr.Markdown(elem_id="judge-status")
        prompt = gr.Markdown(elem_id="judge-prompt")
        with gr.Row(equal_height=True):
            answer_a = gr.Textbox(label=t("judge.answer_a"), lines=6, interactive=False, elem_id="judge-answer-a")
            answer_b = gr.Textbox(label=t("judge.answer_b"), lines=6, interactive=False, elem_id="judge-answer-b")
        edited = gr.Textbox(label=t("judge.edit"), lines=2)
        with gr.Row():
            buttons = {"a": gr.Button(t("judge.pick_a"), elem_id="judge-pick-a"),
                       "b": gr.Button(t("judge.pick_b"), elem_id="judge-pick-b"),
                       "tie": gr.Button(t("judge.tie"), elem_id="judge-pick-tie"),
                       "both_bad": gr.Button(t("judge.both_bad"), elem_id="judge-pick-both-bad")}
        reveal = gr.Markdown(elem_id="judge-reveal")
        with gr.Accordion(t("judge.scoreboard"), open=True):
            board = gr.Dataframe(value=localized(lambda: scoreboard_frame(db)), headers=SCORE_COLUMNS, interactive=False,
                                 wrap=True, elem_id="judge-scoreboard")
            refresh = gr.Button(t("judge.refresh"))
            with gr.Row():
                dataset_name = gr.Textbox(label=t("judge.dataset_name"), value="my judgements", scale=2)
                export_btn = gr.Button(t("judge.export_dataset"), scale=1)
                jsonl_btn = gr.Button(t("judge.export_jsonl"), scale=1)
                train_btn = gr.Button(t("judge.train"), variant="primary", scale=1, elem_id="judge-train")
            export_msg = gr.Markdown(elem_id="judge-export-message")
            jsonl_file = gr.File(interactive=False, visible=False)

    def _start(b, x, y, p, *values):
        yield from start(db, b, x, y, p, dict(zip(settings, values)))

    start_btn.click(_start, inputs=[base, model_x, model_y, prompts, *settings.values()],
                    outputs=[session, index, status, prompt, answer_a, answer_b, reveal], api_name="judge_start")
    def _board(request: gr.Request | None = None):
        return localize(scoreboard_frame(db), request)

    for choice, button in buttons.items():
        button.click(lambda s, i, e, c=choice: pick(db, s, i, c, e), inputs=[session, index, edited],
                     outputs=[index, status, prompt, answer_a, answer_b, reveal, edited],
                     api_name=f"judge_pick_{choice}").then(_board, outputs=board, api_visibility="private")
    refresh.click(_board, outputs=board, api_name="judge_scoreboard")
    export_btn.click(lambda s, n: export_dataset(db, s, n), inputs=[session, dataset_name], outputs=export_msg,
                     api_name="judge_export_dataset")
    def _jsonl(s):
        message, path = export_jsonl(db, s)
        return message, gr.update(value=path, visible=path is not None)

    jsonl_btn.click(_jsonl, inputs=session, outputs=[export_msg, jsonl_file], api_name="judge_export_jsonl")

    def _base_changed(b):
        options = model_choices(db, b)
        return (gr.update(choices=options, value=options[0][1] if options else None),
                gr.update(choices=options, value=options[1][1] if len(options) > 1 else None))

    base.change(_base_changed, inputs=base, outputs=[model_x, model_y], api_visibility="private")
    return {"session": session, "train_btn": train_btn, "dataset_name": dataset_name, "message": export_msg,
            "model_x": model_x, "model_y": model_y, "refresh_models": _base_changed}
