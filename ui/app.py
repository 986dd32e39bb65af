"""The studio's Blocks: a header and the tabs. ``build_app(db)`` is what launch.py serves."""
from __future__ import annotations

import gradio as gr

from storage.db import Database
from ui.i18n import add, t, translations
from ui.tabs import datasets, runs

THEME = gr.themes.Soft(primary_hue="indigo")
CSS = """
#studio-header h1 { margin-bottom: 0; }
#studio-header p { margin-top: 2px; opacity: .75; }
"""

add("pending.train", "Pick a model and a method (LoRA, QLoRA, AdaLoRA), see the memory estimate, and start a run.",
    "选择模型和方法（LoRA、QLoRA、AdaLoRA），查看显存估算，然后开始训练。")
add("pending.chat", "Talk to a trained adapter beside its base model, side by side.", "将训练好的适配器与基础模型并排对话。")
add("pending.export", "Download the merged model or the adapter alone.", "下载合并后的模型或单独的适配器。")


def build_app(db: Database) -> gr.Blocks:
    with gr.Blocks(title="Finetune Studio") as demo:
        gr.Markdown(t("app.header"), elem_id="studio-header")
        with gr.Tabs():
            with gr.Tab(t("tab.datasets"), id="datasets"):
                datasets.render(db)
            with gr.Tab(t("tab.train"), id="train"):
                gr.Markdown(t("pending.train"))
            with gr.Tab(t("tab.runs"), id="runs"):
                runs.render(db)
            with gr.Tab(t("tab.chat"), id="chat"):
                gr.Markdown(t("pending.chat"))
            with gr.Tab(t("tab.export"), id="export"):
                gr.Markdown(t("pending.export"))
    return demo


def launch_kwargs(db: Database) -> dict:
    """Options that Gradio 6 takes at launch() rather than Blocks(). Only the workspace folders
    whose files the UI shows (dataset images, chat attachments) are served."""
    ws = db.workspace
    return dict(theme=THEME, css=CSS, footer_links=["settings"], i18n=translations(),
                allowed_paths=[str(ws.datasets_dir), str(ws.root / "chats")])
