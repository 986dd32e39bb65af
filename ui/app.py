"""The studio's Blocks: a header and the tabs. ``build_app(db)`` is what launch.py serves."""
from __future__ import annotations

import gradio as gr

from storage.db import Database
from ui.i18n import add, t, translations
from ui import memory_bar
from ui.tabs import datasets, runs, train

THEME = gr.themes.Soft(primary_hue="indigo")
CSS = memory_bar.CSS + runs.CSS + """
#studio-header h1 { margin-bottom: 0; }
#studio-header p { margin-top: 2px; opacity: .75; }
"""

add("pending.chat", "Talk to a trained adapter beside its base model, side by side.", "将训练好的适配器与基础模型并排对话。")
add("pending.export", "Download the merged model or the adapter alone.", "下载合并后的模型或单独的适配器。")


def build_app(db: Database) -> gr.Blocks:
    with gr.Blocks(title="Finetune Studio") as demo:
        gr.Markdown(t("app.header"), elem_id="studio-header")
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab.datasets"), id="datasets"):
                datasets.render(db)
            with gr.Tab(t("tab.train"), id="train") as train_tab:
                train_parts = train.render(db, tabs)
            with gr.Tab(t("tab.runs"), id="runs"):
                runs_parts = runs.render(db)
            with gr.Tab(t("tab.chat"), id="chat"):
                gr.Markdown(t("pending.chat"))
            with gr.Tab(t("tab.export"), id="export"):
                gr.Markdown(t("pending.export"))
        form = train_parts["form"]
        demo.load(train_parts["refresh"], inputs=form.inputs, outputs=train_parts["refresh_outputs"],
                  api_visibility="private")
        train_tab.select(lambda: gr.update(choices=train.dataset_choices(db)), outputs=train_parts["dataset"],
                         api_visibility="private")
    return demo


def launch_kwargs(db: Database) -> dict:
    """Options that Gradio 6 takes at launch() rather than Blocks(). Only the workspace folders
    whose files the UI shows (dataset images, chat attachments) are served."""
    ws = db.workspace
    return dict(theme=THEME, css=CSS, footer_links=["settings"], i18n=translations(),
                allowed_paths=[str(ws.datasets_dir), str(ws.root / "chats")])
