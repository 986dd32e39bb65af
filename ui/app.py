"""The studio's Blocks: a header and the tabs. ``build_app(db)`` is what launch.py serves."""
from __future__ import annotations

import gradio as gr

from storage.db import Database
from ui.tabs import runs

TITLE = "Finetune Studio"
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = """
#studio-header h1 { margin-bottom: 0; }
#studio-header p { margin-top: 2px; opacity: .75; }
"""

PENDING_TABS = {
    "Datasets": "Upload instruction, chat or image-text data; it is validated and previewed here.",
    "Train": "Pick a model and a method (LoRA, QLoRA, AdaLoRA), see the memory estimate, and start a run.",
    "Chat": "Talk to a trained adapter beside its base model, side by side.",
    "Export": "Download the merged model or the adapter alone.",
}


def build_app(db: Database) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nFine-tune language and vision-language models without code.",
                    elem_id="studio-header")
        with gr.Tabs():
            for name in ("Datasets", "Train"):
                with gr.Tab(name, id=name.lower()):
                    gr.Markdown(PENDING_TABS[name])
            with gr.Tab("Runs", id="runs"):
                runs.render(db)
            for name in ("Chat", "Export"):
                with gr.Tab(name, id=name.lower()):
                    gr.Markdown(PENDING_TABS[name])
    return demo


def launch_kwargs() -> dict:
    """Options that Gradio 6 takes at launch() rather than Blocks()."""
    return dict(theme=THEME, css=CSS, footer_links=["gradio"])
