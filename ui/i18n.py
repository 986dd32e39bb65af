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


# Table headers: Gradio translates labels in the browser but not a table's column names, so tables
# are localised on the server from the browser's language (Accept-Language) via ``localize``.
COLUMN_ZH = {
    "ID": "编号", "Name": "名称", "Status": "状态", "Model": "模型", "Dataset": "数据集", "Method": "方法",
    "Settings": "设置", "Loss": "损失", "Eval loss": "评估损失", "Duration": "耗时", "Memory est./measured": "显存 估算/实测",
    "Attempts": "尝试次数", "Job": "任务", "Progress": "进度", "Created (UTC)": "创建时间 (UTC)", "Error": "错误",
    "Format": "格式", "Kind": "类型", "Rows": "行数", "Train": "训练", "Validation": "验证", "Images": "图片",
    "Skipped": "跳过", "Size": "大小", "Where": "位置", "Problem": "问题", "How to fix": "如何修复",
    "Adapter": "适配器", "Verified": "已校验", "SHA-256": "SHA-256",
    # judging scoreboard (ui/tabs/judge.py)
    "Base model": "基础模型", "Model 1": "模型 1", "Model 2": "模型 2", "Judgements": "评判数",
    "Model 1 wins": "模型 1 胜", "Model 2 wins": "模型 2 胜", "Ties": "平局", "Both bad": "都不好",
    "Model 1 win rate (95% CI)": "模型 1 胜率（95% 置信区间）",
    # batch compare (chat tab) and the settings that differ between runs (runs tab)
    "Prompt": "提示词", "field": "设置项",
}


# Values people pick from lists: statuses and "all"
add("v.all", "all", "全部")
add("v.queued", "queued", "排队中")
add("v.running", "running", "运行中")
add("v.succeeded", "succeeded", "成功")
add("v.failed", "failed", "失败")
add("v.cancelled", "cancelled", "已取消")
add("v.auto_detect", "auto-detect", "自动识别")
add("v.attention", "attention only", "仅注意力层")
add("v.all_linear", "all linear layers", "所有线性层")
add("v.custom", "custom", "自定义")
add("v.validation", "validation", "验证集")
add("v.train", "train", "训练集")
add("v.auto", "auto", "自动")
add("v.True", "on", "开启")
add("v.False", "off", "关闭")
# method presets (studio/methods): the descriptive ones; method and technique names stay as they are
add("v.balanced", "balanced", "均衡")
add("v.light", "light", "轻量")
add("v.strong", "strong", "强")
add("v.wide", "wide", "宽")
add("v.long", "long", "长文本")
add("v.short", "short", "短")
add("v.paper", "paper", "论文设置")
add("v.full", "full", "完整")
add("v.default", "default", "默认")
add("v.frozen", "frozen", "冻结")
add("v.random", "random", "随机")
add("v.vocab", "vocab", "词表")


def choices(values: list[str]) -> list[tuple]:
    """(translated label, value) pairs for values that have a ``v.<value>`` string, else the value."""
    return [(t(f"v.{v}") if f"v.{v}" in EN else v, v) for v in values]


def wants_chinese(request: gr.Request | None) -> bool:
    header = (request.headers.get("accept-language", "") if request is not None else "") or ""
    return header.lower().lstrip().startswith("zh")


def localize(frame, request: gr.Request | None):
    """The table with its column names in the browser's language (English names are the keys), and
    its statuses (queued, running, succeeded...) too."""
    if not wants_chinese(request):
        return frame
    if "Status" in frame.columns:
        frame = frame.assign(Status=frame["Status"].map(lambda v: ZH.get(f"v.{v}", v) if isinstance(v, str) else v))
    return frame.rename(columns=lambda c: COLUMN_ZH.get(c, c))


def localized(make):
    """A table's value function for ``gr.Dataframe(value=...)`` whose column names follow the browser's
    language: Gradio calls it without a request while building the page, then with the request of
    each page load."""
    def value(request: gr.Request | None = None):
        return localize(make(), request)

    return value


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
