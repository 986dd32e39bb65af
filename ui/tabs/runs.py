"""Runs tab: history, the live view of one run (progress, loss plot, log), compare, and all jobs.

Everything is read from the database on a timer, so a browser refresh, a second tab or a UI
restart shows the same thing, running work included.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import gradio as gr
import pandas as pd

from storage.db import Database
from studio import activity
from studio.datasets import service as datasets
from studio.methods import METHODS
from studio.training import history, service as training
from ui.i18n import add, localize, localized, t
from ui.i18n import choices as translated_choices
from ui.tabs import runs_compare

REFRESH_S = 2.0
LOG_LINES = 12  # the live view's log panel: the log file's last lines, all in view
JOB_COLUMNS = ["ID", "Job", "Status", "Progress", "Created (UTC)", "Duration", "Error"]
RUN_COLUMNS = ["ID", "Name", "Status", "Model", "Dataset", "Method", "Settings", "Loss", "Eval loss", "Duration",
               "Memory est./measured", "Attempts"]
# Wide enough that no header wraps letter by letter; the settings column gets the room it needs
RUN_COLUMN_WIDTHS = ["50px", "160px", "95px", "170px", "130px", "80px", "260px", "70px", "85px", "85px", "170px",
                     "150px"]
STATUSES = ["all", "queued", "running", "succeeded", "failed", "cancelled"]

add("runs.preflight", "The worker that was to train this run refused it before the first step:",
    "负责训练的 worker 在第一步之前拒绝了本次运行：")
add("runs.intro", "Every training run, newest first. Pick one to follow it live; tick several to compare them. "
    "The page refreshes by itself and reads everything from the database.",
    "所有训练运行，最新的在前。选择一个可实时跟踪；勾选多个可对比。页面自动刷新，所有数据来自数据库。")
add("runs.status", "Status", "状态")
add("runs.method", "Method", "方法")
add("runs.table", "Run history", "运行历史")
add("runs.selected", "Run", "运行")
add("runs.loss", "Loss", "损失")
add("runs.cancel", "Cancel run", "取消运行")
add("runs.resume", "Resume", "继续训练")
add("runs.up", "↑ Move up", "↑ 上移")
add("runs.down", "↓ Move down", "↓ 下移")
add("runs.attempts", "Attempts (each time a worker ran it)", "尝试记录（每次由 worker 运行）")
add("runs.rename", "New name", "新名称")
add("runs.rename_btn", "Rename", "重命名")
add("runs.delete", "Delete run", "删除运行")
add("runs.chat", "Chat with this run →", "与此运行对话 →")
add("runs.export", "Export this run →", "导出此运行 →")
add("runs.log", "Log (last lines)", "日志（末尾）")
add("runs.compare", "Compare runs", "对比运行")
add("runs.compare_pick", "Runs to compare", "要对比的运行")
add("runs.diff", "Settings that differ", "不同的设置")
add("jobs.all", "All jobs (training, statistics, chat, export, model preparation)", "所有任务（训练、统计、对话、导出、模型准备）")
add("jobs.intro", "Everything the studio has run or is running, read from the database.",
    "工作室运行过或正在运行的所有任务（来自数据库）。")
add("jobs.table", "Jobs", "任务")
add("jobs.id", "Job ID", "任务 ID")
add("jobs.cancel", "Cancel job", "取消任务")
add("jobs.show_log", "Show log", "查看日志")
add("jobs.log", "Log (last lines)", "日志（末尾）")


def jobs_table(db: Database) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.astuple(r) for r in activity.job_rows(db)], columns=JOB_COLUMNS)


def runs_table(db: Database, status: str = "all", method: str = "all") -> pd.DataFrame:
    names = {d.id: d.name for d in datasets.list_datasets(db)}
    rows = history.run_rows(db, None if status == "all" else status, None if method == "all" else method, names)
    return pd.DataFrame([dataclasses.astuple(r) for r in rows], columns=RUN_COLUMNS)


def run_choices(db: Database) -> list[tuple[str, int]]:
    return [(f"#{r.id} {r.name} ({r.status})", r.id) for r in training.list_runs(db)]


def _problems_html(problems: list[dict]) -> str:
    """The worker's pre-flight refusal, one line per problem with its fix."""
    items = "".join(f"<li><code>{html.escape(p['field'])}</code> {html.escape(p['message'])}"
                    + (f" — <i>{html.escape(p['hint'])}</i>" if p.get("hint") else "") + "</li>" for p in problems)
    return f'<div class="run-error">{html.escape(t("runs.preflight"))}<ul>{items}</ul></div>'


def _eta(seconds: float | None) -> str:
    return f" · ETA {activity.format_duration(seconds)}" if seconds else ""


def status_html(db: Database, run_id: int) -> str:
    """Badge, progress bar and the latest figures of one run."""
    run = training.get_run(db, run_id)
    progress = training.run_progress(db, run_id)
    m = history.latest_metrics(db, run_id)
    fraction = 1.0 if run.status == "succeeded" else float(progress.get("fraction") or 0.0)
    figures = []
    if m:
        figures.append(f"step {m['step']}/{m['total_steps']}" + (f" · epoch {m['epoch']:.2f}" if m["epoch"] else ""))
        for key, label, fmt in (("loss", "loss", "{:.4f}"), ("learning_rate", "lr", "{:.2e}"),
                                ("grad_norm", "grad norm", "{:.3f}"), ("tokens_per_s", "tokens/s", "{:.0f}"),
                                ("reward_accuracy", "reward accuracy", "{:.0%}"), ("reward_margin", "margin", "{:.3f}"),
                                ("logps_chosen", "log-p chosen", "{:.1f}"), ("logps_rejected", "log-p rejected", "{:.1f}")):
            if m.get(key) is not None:
                figures.append(f"{label} {fmt.format(m[key])}")
        if m.get("peak_memory_bytes"):
            figures.append(f"peak memory {m['peak_memory_bytes'] / 2**30:.2f} GiB")
    message = progress.get("message") or ""
    waiting = training.queue_text(db, run)
    if waiting:
        message = f"{message} · {waiting}" if message else waiting
    attempts = history.attempt_lines(run) if len(run.attempts or []) > 1 or _lost(run) else []
    attempts_html = (f'<details class="run-attempts"><summary>{html.escape(t("runs.attempts"))}</summary><ul>'
                     + "".join(f"<li>{html.escape(line)}</li>" for line in attempts) + "</ul></details>") if attempts else ""
    error = _problems_html(run.problems) if run.problems else \
        f'<div class="run-error">{html.escape(run.error)}</div>' if run.error else ""
    return f"""
<div class="run-live">
  <div><span class="run-badge run-{run.status}">{run.status}</span> <b>#{run.id} {html.escape(run.name)}</b>
   · {html.escape(run.model_ref)} · {run.method} · memory est./measured {history.memory_text(run)}</div>
  <div class="run-bar"><div style="width:{100 * fraction:.1f}%"></div></div>
  <div class="run-msg">{html.escape(message)}{_eta(m.get('eta_s')) if history.is_active(run.status) else ''}</div>
  <div class="run-figures">{' · '.join(figures)}</div>{error}{attempts_html}
</div>"""


def _lost(run) -> bool:
    return any(a.get("outcome") == "worker-lost" for a in run.attempts or [])


def loss_frame(db: Database, run_ids: list[int], label_runs: bool = True) -> pd.DataFrame:
    """Gradio's LinePlot fixes its set of colour series at the first value it draws: a series that
    appears later (the first loss of a run that was still loading, its first eval loss) is never
    drawn -- the axes rescale and no line shows. So every frame names all its series from the start:
    a series without points yet gets one placeholder point without a value, which draws nothing."""
    points = history.loss_points(db, run_ids, label_runs)
    present = {p["series"] for p in points}
    names = history.series_names(run_ids, label_runs)
    points += [{"step": 1, "loss": math.nan, "series": name} for name in names if name not in present]
    frame = pd.DataFrame(points, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "string"})


def live_loss_frame(db: Database, run_id: int | None) -> pd.DataFrame:
    """One run's plot: always the same three series (train, train (raw), eval), in fixed colours."""
    return loss_frame(db, [run_id] if run_id else [], label_runs=False)


def loss_plot(db: Database, run_ids: list[int]) -> Any:
    """The plot's data with its colours: the smoothed loss strong, the raw loss a pale tint behind it."""
    return gr.update(value=loss_frame(db, run_ids), color_map=history.loss_colours(run_ids))


def run_log(db: Database, run_id: int) -> str:
    run = training.get_run(db, run_id)
    return activity.job_log_last_lines(db, run.job_id, lines=LOG_LINES) if run.job_id else ""


def live_view(db: Database, run_id):
    if not run_id:
        return "<div class='run-live'>No run selected yet: start one in the Train tab.</div>", live_loss_frame(db, None), ""
    try:
        return status_html(db, int(run_id)), live_loss_frame(db, int(run_id)), run_log(db, int(run_id))
    except LookupError as e:
        return f"<div class='run-live'>{html.escape(str(e))}</div>", live_loss_frame(db, None), ""


def run_action(db: Database, action: str, run_id, new_name: str = "") -> str:
    """Cancel / resume / move up or down in the queue / rename / delete, as one sentence for the user."""
    if not run_id:
        return "Pick a run first."
    run_id = int(run_id)
    try:
        if action == "cancel":
            return f"Run #{run_id} is {training.cancel_run(db, run_id)}; a running run stops after its current step."
        if action == "resume":
            training.resume_run(db, run_id)
            return f"Run #{run_id} is queued again; it continues from its last complete checkpoint."
        if action in ("up", "down"):
            return training.move_run(db, run_id, 1 if action == "up" else -1)
        if action == "rename":
            training.rename_run(db, run_id, new_name)
            return f"Run #{run_id} renamed."
        if action == "delete":
            training.delete_run(db, run_id)
            return f"Run #{run_id} and its files were deleted."
    except (LookupError, ValueError) as e:
        return str(e)
    raise ValueError(action)


CSS = """
.run-live { font-size: 14px; line-height: 1.7; }
.run-badge { color: #fff; border-radius: 6px; padding: 1px 8px; font-weight: 600; background: #64748b; }
.run-running { background: #2563eb; } .run-succeeded { background: #16a34a; } .run-failed { background: #dc2626; }
.run-cancelled { background: #d97706; } .run-queued { background: #64748b; }
.run-bar { height: 10px; background: #e2e8f0; border-radius: 5px; overflow: hidden; margin: 6px 0; }
.run-bar > div { height: 100%; background: #6366f1; transition: width .5s; }
.run-error { color: #b91c1c; white-space: pre-wrap; }
"""


def render(db: Database) -> dict:
    gr.Markdown(t("runs.intro"))
    with gr.Row():
        status = gr.Dropdown(label=t("runs.status"), choices=translated_choices(STATUSES), value="all", scale=1)
        method = gr.Dropdown(label=t("runs.method"), value="all", scale=1,
                             choices=[(t("v.all"), "all"), *[(m.label, m.name) for m in METHODS.values()]])
    table = gr.Dataframe(value=localized(lambda: runs_table(db)), headers=RUN_COLUMNS, interactive=False, wrap=True,
                         label=t("runs.table"), elem_id="runs-table", column_widths=RUN_COLUMN_WIDTHS)
    choices = run_choices(db)
    selected = gr.Dropdown(label=t("runs.selected"), choices=choices, value=choices[0][1] if choices else None,
                           elem_id="runs-selected")
    live = gr.HTML(elem_id="run-live")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            plot = gr.LinePlot(x="step", y="loss", color="series", label=t("runs.loss"), height=300,
                               elem_id="run-loss-plot", color_map=history.LIVE_COLOURS)
        with gr.Column(scale=2):
            with gr.Row():
                cancel = gr.Button(t("runs.cancel"), variant="stop", size="sm")
                resume = gr.Button(t("runs.resume"), size="sm")
                delete = gr.Button(t("runs.delete"), size="sm")
            with gr.Row():
                move_up = gr.Button(t("runs.up"), size="sm", elem_id="run-move-up")
                move_down = gr.Button(t("runs.down"), size="sm", elem_id="run-move-down")
            with gr.Row():
                new_name = gr.Textbox(label=t("runs.rename"), scale=3)
                rename = gr.Button(t("runs.rename_btn"), size="sm", scale=1)
            with gr.Row():
                chat_btn = gr.Button(t("runs.chat"), variant="primary", size="sm", elem_id="run-chat")
                export_btn = gr.Button(t("runs.export"), variant="primary", size="sm", elem_id="run-export")
            action_msg = gr.Markdown()
    # as many lines as the box shows (it grows for wrapped lines): a longer text opened scrolled to its
    # top, so the panel showed earlier lines and hid the last ones (the full log: "All jobs" -> Show log)
    log = gr.Textbox(label=t("runs.log"), lines=LOG_LINES, max_lines=4 * LOG_LINES, autoscroll=True, interactive=False,
                     elem_id="run-log")
    compare = runs_compare.render(db, choices)
    with gr.Accordion(t("jobs.all"), open=False):
        _render_jobs(db)

    def _tick(run_id, status_filter, method_filter, request: gr.Request):
        current = run_choices(db)
        if not run_id and current:
            run_id = current[0][1]
        return (localize(runs_table(db, status_filter, method_filter), request), gr.update(choices=current, value=run_id),
                gr.update(choices=current), *live_view(db, run_id))

    timer = gr.Timer(REFRESH_S)
    tick_outputs = [table, selected, compare["pick"], live, plot, log]
    timer.tick(_tick, inputs=[selected, status, method], outputs=tick_outputs, show_progress="hidden",
               api_name="refresh_runs")
    def _filter(s, m, request: gr.Request):
        return localize(runs_table(db, s, m), request)

    for f in (status, method):
        f.change(_filter, inputs=[status, method], outputs=table, api_visibility="private")
    selected.change(lambda r: live_view(db, r), inputs=selected, outputs=[live, plot, log], api_name="run_view",
                    show_progress="hidden")
    cancel.click(lambda r: run_action(db, "cancel", r), inputs=selected, outputs=action_msg, api_name="cancel_run")
    resume.click(lambda r: run_action(db, "resume", r), inputs=selected, outputs=action_msg, api_name="resume_run")
    move_up.click(lambda r: run_action(db, "up", r), inputs=selected, outputs=action_msg, api_name="move_run_up")
    move_down.click(lambda r: run_action(db, "down", r), inputs=selected, outputs=action_msg,
                    api_name="move_run_down")
    delete.click(lambda r: run_action(db, "delete", r), inputs=selected, outputs=action_msg, api_name="delete_run",
                 js="(r) => confirm('Delete this run, its adapter and its files?') ? r : null")
    rename.click(lambda r, n: run_action(db, "rename", r, n), inputs=[selected, new_name], outputs=action_msg,
                 api_name="rename_run")
    return {"selected": selected, "chat_btn": chat_btn, "export_btn": export_btn, "compare": compare}


def _render_jobs(db: Database) -> None:
    gr.Markdown(t("jobs.intro"))
    jobs = gr.Dataframe(value=localized(lambda: jobs_table(db)), headers=JOB_COLUMNS, interactive=False,
                        label=t("jobs.table"), wrap=True, elem_id="jobs-table")
    with gr.Row():
        job_id = gr.Number(label=t("jobs.id"), precision=0, minimum=1, scale=1)
        cancel = gr.Button(t("jobs.cancel"), variant="stop", scale=0)
        show_log = gr.Button(t("jobs.show_log"), scale=0)
    notice = gr.Markdown()
    log = gr.Code(label=t("jobs.log"), language=None, lines=12, interactive=False)
    timer = gr.Timer(REFRESH_S * 2)
    def _jobs(request: gr.Request):
        return localize(jobs_table(db), request)

    timer.tick(_jobs, outputs=jobs, api_name="refresh_jobs", show_progress="hidden")

    def _cancel(jid):
        if not jid:
            return "Enter the ID of the job to cancel."
        try:
            state = activity.cancel_job(db, int(jid))
        except LookupError as e:
            return str(e)
        return f"Job {int(jid)} is {state}; a running job stops within seconds."

    cancel.click(_cancel, inputs=job_id, outputs=notice, api_name="cancel_job")
    show_log.click(lambda jid: activity.job_log_tail(db, int(jid)) if jid else "", inputs=job_id, outputs=log,
                   api_name="job_log")
