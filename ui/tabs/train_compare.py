"""The Train tab's "compare methods" action: the form's run, trained once per ticked method (same model,
data, steps, cut-off and seed; each method's default preset and recommended learning rate), queued as
one group that the Runs tab's compare view shows side by side. The logic is studio.method_compare."""
from __future__ import annotations

from typing import Any

import gradio as gr

from storage.db import Database
from studio import method_compare
from studio.methods import METHODS
from studio.spec import SpecError
from ui.i18n import add, t

add("tr.compare_run", "Compare methods by training each one (same data, steps, cut-off and seed)",
    "逐一训练以比较方法（相同的数据、步数、截断长度和随机种子）")
add("tr.compare_intro", "Tick two to six methods: this run is queued once per method, as one group, each method "
    "with its default preset and recommended learning rate, everything else as set above. Keep the run short "
    "(Max steps under Advanced settings). The Runs tab then shows their loss curves, trainable parameters, tokens/s "
    "and peak memory side by side, and opens the chat with all their adapters.",
    "勾选 2 到 6 种方法，本次运行将按每种方法各排队一次，组成一组：每种方法使用其默认预设和推荐学习率，其余设置与上方相同。"
    "请让运行保持简短（高级设置中的“最大步数”）。之后运行记录页会并排显示它们的损失曲线、可训练参数、token/秒和显存峰值，"
    "并可打开对话页同时使用所有适配器。")
add("tr.compare_pick", "Methods to compare", "要比较的方法")
add("tr.compare_start", "Train each method", "逐一训练这些方法")


def start(db: Database, spec_values: dict[str, Any], methods: list[str]) -> tuple[str, str | None]:
    """(message for the user, group id or None when nothing was queued)."""
    from ui.tabs.train import spec_from_form

    spec, problems = spec_from_form(spec_values)
    if spec is None:
        return "**Not started.** Fix these settings:\n" + "\n".join(f"- {p}" for p in problems), None
    try:
        plan = method_compare.start_comparison(db, spec, methods or [], local_paths=False)
    except SpecError as e:
        return "**Not started.**\n" + "\n".join(f"- {p}" for p in e.problems), None
    queued = ", ".join(f"#{i} {METHODS[m].label}" for i, m in zip(plan.run_ids, plan.methods))
    lines = [f"**Comparison {plan.group} queued:** {queued}. Follow it in the Runs tab."]
    lines += [f"- Not included: **{METHODS[m].label}** — " + "; ".join(str(p) for p in problems)
              for m, problems in plan.refused.items()]
    return "\n".join(lines), plan.group


def render() -> dict:
    """The accordion with the methods to tick and the button (wired by ``connect`` once the form is built)."""
    with gr.Accordion(t("tr.compare_run"), open=False, elem_id="train-compare"):
        gr.Markdown(t("tr.compare_intro"))
        methods = gr.CheckboxGroup(label=t("tr.compare_pick"), choices=[(m.label, m.name) for m in METHODS.values()],
                                   value=list(method_compare.DEFAULT_METHODS), elem_id="train-compare-methods")
        button = gr.Button(t("tr.compare_start"), variant="primary", elem_id="train-compare-start")
        message = gr.Markdown(elem_id="train-compare-message")
    return {"methods": methods, "button": button, "message": message, "group": gr.State(None)}


def connect(db: Database, parts: dict, form: Any, tabs: gr.Tabs | None) -> dict:
    """The click: queue the group, open the Runs tab. ``event`` lets the app open the compare view after it."""
    methods, group = parts["methods"], parts["group"]

    def _start(data):
        text, started = start(db, form.values(data), data.get(methods))
        go = gr.update(selected="runs") if started and tabs is not None else gr.update()
        return text, started, *([go] if tabs is not None else [])

    event = parts["button"].click(_start, inputs={*form.inputs, methods}, api_name="compare_methods",
                                  outputs=[parts["message"], group, *([tabs] if tabs is not None else [])])
    return {**parts, "event": event}
