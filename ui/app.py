"""The studio's Blocks: a header, the tabs, and the few events that lead from one tab to the next.
``build_app(db)`` is what launch.py serves; each tab module can also be rendered on its own."""
from __future__ import annotations

import gradio as gr

from storage.db import Database
from ui import memory_bar
from ui.i18n import t, translations
from ui.tabs import chat, datasets, export, judge, runs, runs_compare, train

THEME = gr.themes.Soft(primary_hue="indigo")
CSS = memory_bar.CSS + runs.CSS + export.CSS + """
#studio-header h1 { margin-bottom: 0; }
#studio-header p { margin-top: 2px; opacity: .75; }
"""


def build_app(db: Database) -> gr.Blocks:
    with gr.Blocks(title="Finetune Studio") as demo:
        gr.Markdown(t("app.header"), elem_id="studio-header")
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab.datasets"), id="datasets"):
                datasets_parts = datasets.render(db)
            with gr.Tab(t("tab.train"), id="train") as train_tab:
                train_parts = train.render(db, tabs)
            with gr.Tab(t("tab.runs"), id="runs"):
                runs_parts = runs.render(db)
            with gr.Tab(t("tab.chat"), id="chat") as chat_tab:
                chat_parts = chat.render(db)
            with gr.Tab(t("tab.export"), id="export") as export_tab:
                export_parts = export.render(db)
        demo.load(lambda: gr.update(choices=(c := datasets.dataset_choices(db)), value=c[0][1] if c else None),
                  outputs=datasets_parts["selected"], api_visibility="private")  # preview the newest dataset
        _connect(db, demo, tabs, train_tab, chat_tab, export_tab, train_parts, runs_parts, chat_parts, export_parts)
    return demo


def _connect(db, demo, tabs, train_tab, chat_tab, export_tab, train_parts, runs_parts, chat_parts, export_parts):
    """Cross-tab events: fresh choices when a tab opens, and 'chat with / export this run'."""
    form = train_parts["form"]
    demo.load(train_parts["refresh"], inputs=form.inputs, outputs=train_parts["refresh_outputs"],
              api_visibility="private")
    train_tab.select(lambda: gr.update(choices=train.dataset_choices(db)), outputs=train_parts["dataset"],
                     api_visibility="private")
    chat_tab.select(lambda b: (gr.update(choices=chat.adapter_choices(db, b)), gr.update(choices=chat.saved_choices(db)),
                               gr.update(choices=datasets.dataset_choices(db))),
                    inputs=chat_parts["base"], outputs=[chat_parts["adapters"], chat_parts["saved"], chat_parts["dataset"]],
                    api_visibility="private")
    export_tab.select(lambda k: gr.update(choices=export.adapter_choices(db, k)), inputs=export_parts["kind"],
                      outputs=export_parts["adapter"], api_visibility="private")
    runs_parts["chat_btn"].click(lambda r: (gr.update(selected="chat"), *chat.select_run(db, r)),
                                 inputs=runs_parts["selected"],
                                 outputs=[tabs, chat_parts["base"], chat_parts["adapters"], chat_parts["chat_id"],
                                          *chat_parts["panes"]], api_name="chat_with_run")
    _connect_judging(db, tabs, chat_tab, train_parts, chat_parts["judge"], chat_parts["base"])
    _connect_compare(db, tabs, train_parts["compare"], runs_parts["compare"], chat_parts)
    runs_parts["export_btn"].click(lambda r, k: (gr.update(selected="export"), export.select_run(db, r, k)),
                                   inputs=[runs_parts["selected"], export_parts["kind"]],
                                   outputs=[tabs, export_parts["adapter"]],
                                   api_name="export_run")


def _connect_compare(db, tabs, train_compare, runs_compare_parts, chat_parts):
    """'Compare methods' in the Train tab opens the Runs tab's compare view on the new group; its
    'chat with these adapters' opens the Chat tab with the picked runs' adapters beside the base."""
    train_compare["event"].then(lambda g: runs_compare.show_group(db, g), inputs=train_compare["group"],
                                outputs=[runs_compare_parts["box"], runs_compare_parts["group"]],
                                api_visibility="private")
    runs_compare_parts["chat_btn"].click(
        lambda ids: (gr.update(selected="chat"), *chat.select_runs(db, ids or [])), inputs=runs_compare_parts["pick"],
        outputs=[tabs, chat_parts["base"], chat_parts["adapters"], chat_parts["chat_id"], *chat_parts["panes"]],
        api_name="chat_with_compared_runs")


def _connect_judging(db, tabs, chat_tab, train_parts, judge_parts, base):
    """Fresh models to judge when the Chat tab opens; "train on my judgements" opens the Train tab
    with a DPO spec on the collected pairs, continuing the winning adapter."""
    chat_tab.select(judge_parts["refresh_models"], inputs=base, outputs=[judge_parts["model_x"], judge_parts["model_y"]],
                    api_visibility="private")
    fields = train_parts["form"].fields

    def _train(session, name):
        spec, message = judge.train_on_judgements(db, session, name)
        if spec is None:
            return message, *[gr.update()] * 5
        stage = spec["stage"]
        return (message, gr.update(selected="train"), spec["model"],
                gr.update(choices=train.dataset_choices(db), value=spec["data"]["dataset_id"]), stage["name"],
                gr.update(choices=train.adapter_choices(db), value=stage.get("start_from", "")))

    judge_parts["train_btn"].click(
        _train, inputs=[judge_parts["session"], judge_parts["dataset_name"]],
        outputs=[judge_parts["message"], tabs, fields["model"], fields["data.dataset_id"], fields["stage.name"],
                 fields["stage.start_from"]], api_name="train_on_judgements")


def launch_kwargs(db: Database) -> dict:
    """Options that Gradio 6 takes at launch() rather than Blocks(). Only the workspace folders
    whose files the UI shows (dataset images, chat attachments, comparison files) are served."""
    ws = db.workspace
    return dict(theme=THEME, css=CSS, footer_links=["settings"], i18n=translations(), head=judge.SHORTCUTS_JS,
                allowed_paths=[str(ws.datasets_dir), str(ws.root / "chats")])


def serve(db: Database, host: str, port: int | None, auth=None, **kwargs) -> gr.Blocks:
    """Build, launch without blocking, and add the download route (which honours the login)."""
    from ui.downloads import mount_downloads

    demo = build_app(db)
    demo.queue(default_concurrency_limit=8)
    demo.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=True, **launch_kwargs(db),
                **kwargs)
    mount_downloads(demo.app, db)
    return demo
