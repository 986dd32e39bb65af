"""The Runs tab's compare view: loss curves of several runs on one plot, each run's figures (method,
trainable parameters, tokens/s, peak memory, final loss) side by side, the settings that differ, and
one click to chat with all their adapters. A comparison of methods (Train tab -> "compare methods")
is picked as one group; any runs can be picked one by one too. Refreshed on a timer while shown."""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from storage.db import Database
from studio import method_compare
from studio.method_guide import millions
from studio.methods import METHODS
from studio.training import history
from ui.i18n import COLUMN_ZH, add, localize, localized, t

REFRESH_S = 3.0
COLUMNS = ["Run", "Method", "Status", "Trainable", "Tokens/s", "Peak memory", "Final loss"]
COLUMN_ZH.update({"Run": "运行", "Trainable": "可训练参数", "Tokens/s": "token/秒", "Peak memory": "显存峰值",
                  "Final loss": "最终损失", "Field": "字段"})

add("runs.compare_group", "A comparison of methods (started from the Train tab)", "一次方法对比（从训练页启动）")
add("runs.compare_results", "Side by side", "并排对比")
add("runs.compare_chat", "Chat with these adapters →", "与这些适配器对话 →")
add("runs.compare_hint", "Trainable parameters are peft's count once a run has trained (the estimator's, marked "
    "\"est.\", before); tokens/s and peak memory are the whole run's once it ends; the chat shows up to three "
    "adapters beside the base model.",
    "可训练参数在训练完成后为 peft 的实际计数（之前为估算值，标注“est.”）；token/秒和显存峰值在运行结束后为整个运行的数值；"
    "对话页最多在基础模型旁并排显示三个适配器。")


def swatch(run_id: int, colours: dict[str, str]) -> str:
    """The run's id after a short stroke in its curve's colour: which line is which run."""
    return f'<span style="color:{colours.get(f"#{run_id} train", "inherit")}">━━</span> #{run_id}'


def results_frame(db: Database, run_ids: list[int]) -> pd.DataFrame:
    """One row per run: the figures a comparison of methods is judged by."""
    rows, colours = [], history.loss_colours(run_ids)
    for r in method_compare.results(db, run_ids):
        method = METHODS[r.method].label if r.method in METHODS else r.method
        trainable = millions(r.trainable) + ("" if r.trainable_measured or r.trainable is None else " (est.)")
        rows.append([swatch(r.run_id, colours), method, r.status, trainable,
                     f"{r.tokens_per_s:.0f}" if r.tokens_per_s else "—",
                     f"{r.peak_bytes / 2**30:.2f} GiB" if r.peak_bytes else "—",
                     f"{r.final_loss:.4f}" if r.final_loss is not None else "—"])
    return pd.DataFrame(rows, columns=COLUMNS)


def diff_frame(db: Database, run_ids: list[int]) -> pd.DataFrame:
    rows = history.spec_diff(db, run_ids) if len(run_ids) > 1 else []
    return pd.DataFrame(rows, columns=["Field", *[f"#{i}" for i in run_ids]]) if rows else pd.DataFrame()


def compare_view(db: Database, run_ids: list[int], request: gr.Request | None = None) -> tuple[Any, ...]:
    """(loss plot update, figures table, settings that differ) for the picked runs."""
    from ui.tabs.runs import loss_plot

    return loss_plot(db, run_ids), localize(results_frame(db, run_ids), request), \
        localize(diff_frame(db, run_ids), request)


def group_run_ids(db: Database, group: str | None) -> list[int]:
    return [r.id for r in method_compare.group_runs(db, group)] if group else []


def _ids(values) -> list[int]:
    return [int(v) for v in values or []]


def render(db: Database, choices: list[tuple[str, int]]) -> dict:
    groups = method_compare.groups(db)
    with gr.Accordion(t("runs.compare"), open=False, elem_id="runs-compare") as box:
        group = gr.Dropdown(label=t("runs.compare_group"), choices=groups, value=None, elem_id="runs-compare-group")
        pick = gr.Dropdown(label=t("runs.compare_pick"), choices=choices, multiselect=True, elem_id="runs-compare-pick")
        plot = gr.LinePlot(x="step", y="loss", color="series", label=t("runs.loss"), height=300,
                           elem_id="runs-compare-plot")
        table = gr.Dataframe(value=localized(lambda: pd.DataFrame(columns=COLUMNS)), label=t("runs.compare_results"),
                             interactive=False, wrap=True, headers=COLUMNS,
                             datatype=["html", *["str"] * (len(COLUMNS) - 1)], elem_id="runs-compare-table")
        gr.Markdown(t("runs.compare_hint"))
        chat_btn = gr.Button(t("runs.compare_chat"), variant="primary", size="sm", elem_id="runs-compare-chat")
        diff = gr.Dataframe(label=t("runs.diff"), interactive=False, wrap=True)

    group.change(lambda g: gr.update(value=group_run_ids(db, g)) if g else gr.update(), inputs=group, outputs=pick,
                 api_visibility="private")

    def _view(ids, request: gr.Request):
        return compare_view(db, _ids(ids), request)

    # a new choice of runs is a new set of series: clear the plot first so it is drawn afresh
    pick.change(lambda: None, outputs=plot, api_visibility="private").then(
        _view, inputs=pick, outputs=[plot, table, diff], api_name="compare_runs")

    def _tick(ids, request: gr.Request):  # runs still training: their curves and figures grow
        if not ids:
            return gr.update(choices=method_compare.groups(db)), gr.skip(), gr.skip(), gr.skip()
        return gr.update(choices=method_compare.groups(db)), *compare_view(db, _ids(ids), request)

    gr.Timer(REFRESH_S).tick(_tick, inputs=pick, outputs=[group, plot, table, diff], show_progress="hidden",
                             api_visibility="private")
    return {"box": box, "group": group, "pick": pick, "chat_btn": chat_btn}


def show_group(db: Database, group: str | None) -> tuple[Any, ...]:
    """After 'compare methods' in the Train tab: the compare view opened on the new group."""
    if not group:
        return gr.update(), gr.update()
    return gr.update(open=True), gr.update(choices=method_compare.groups(db), value=group)
