"""UI strings in English and Simplified Chinese.

Gradio translates in the browser: the language follows the browser's locale and can be switched in
the footer's Settings. Every label goes through ``t(key)``; a missing Chinese entry falls back to
English. Messages built from service results stay in English.
"""
from __future__ import annotations

import gradio as gr
from gradio.i18n import I18nData

EN: dict[str, str] = {}
ZH: dict[str, str] = {}


def add(key: str, en: str, zh: str) -> str:
    EN[key], ZH[key] = en, zh
    return key


def t(key: str) -> I18nData:
    if key not in EN:
        raise KeyError(f"no UI string {key!r}: add it to ui/i18n.py")
    return I18nData(key)


def translations() -> gr.I18n:
    """Built at launch, after every tab module has added its strings."""
    return gr.I18n(en=EN, **{"zh-CN": ZH, "zh": ZH})


# -- app shell ---------------------------------------------------------------------------------
add("app.header", "# Finetune Studio\nFine-tune language and vision-language models without code.",
    "# Finetune Studio 微调工作室\n无需编写代码，微调语言模型和视觉语言模型。")
add("tab.datasets", "Datasets", "数据集")
add("tab.train", "Train", "训练")
add("tab.runs", "Runs", "运行记录")
add("tab.chat", "Chat", "对话")
add("tab.export", "Export", "导出")

# -- runs / jobs -------------------------------------------------------------------------------
add("jobs.intro", "Everything the studio has run or is running. The list refreshes by itself and survives a "
    "browser refresh: it is read from the database.",
    "工作室运行过或正在运行的所有任务。列表自动刷新，刷新浏览器也不会丢失：数据来自数据库。")
add("jobs.table", "Jobs", "任务")
add("jobs.id", "Job ID", "任务 ID")
add("jobs.cancel", "Cancel job", "取消任务")
add("jobs.show_log", "Show log", "查看日志")
add("jobs.log", "Log (last lines)", "日志（末尾）")
