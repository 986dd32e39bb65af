"""The Chat tab's offer when a chat does not fit beside a running job: which run holds the memory
("run 'x' holds 14.0 GiB of GPU 0"), and two buttons -- wait for the GPU, or answer on the CPU now.

Shown while the message's job waits for memory (``studio.inference.placement``); the send
generator refreshes it with every poll, so it disappears once the chat starts on either device.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from storage.db import Database
from studio.inference import placement
from studio.inference.errors import ChatError
from ui.i18n import add, t

add("chat.mem_title", "This chat does not fit in the GPU's free memory beside a running job:",
    "此对话无法与正在运行的任务一起放入 GPU 的空闲显存：")
add("chat.mem_wait", "Wait for the GPU", "等待 GPU")
add("chat.mem_cpu", "Use the CPU now (slower)", "立即改用 CPU（较慢）")


def offer_updates(db: Database, job_id: Any) -> tuple[Any, Any]:
    """(the offer's visibility, who holds the memory) for the chat job ``job_id`` (None: no job)."""
    info = placement.memory_wait(db, int(job_id)) if job_id else None
    if info is None or info["wait_chosen"] or not info["can_use_cpu"]:  # on a CPU worker the status line says it
        return gr.update(visible=False), gr.update(value="")
    return gr.update(visible=True), gr.update(value=info["text"])


def render() -> tuple[gr.Group, gr.Markdown, gr.Button, gr.Button]:
    with gr.Group(visible=False, elem_id="chat-memory-offer") as offer:
        gr.Markdown(t("chat.mem_title"))
        holders = gr.Markdown(elem_id="chat-memory-holders")
        with gr.Row():
            wait_btn = gr.Button(t("chat.mem_wait"), elem_id="chat-memory-wait")
            cpu_btn = gr.Button(t("chat.mem_cpu"), variant="primary", elem_id="chat-memory-cpu")
    return offer, holders, wait_btn, cpu_btn


def wire(db: Database, job_id: gr.State, offer: gr.Group, status: gr.Markdown, wait_btn: gr.Button,
         cpu_btn: gr.Button) -> None:
    def _wait(job):
        if job:
            try:
                placement.keep_waiting(db, int(job))
            except ChatError:
                pass  # it started meanwhile: nothing to wait for
        return gr.update(visible=False)

    def _use_cpu(job):
        if not job:
            return gr.update(visible=False), ""
        try:
            placement.use_cpu(db, int(job))
        except ChatError as e:
            return gr.update(visible=False), f"⚠️ {e}"
        return gr.update(visible=False), "moved to the CPU: starting"

    wait_btn.click(_wait, inputs=job_id, outputs=offer, api_name="chat_wait")
    cpu_btn.click(_use_cpu, inputs=job_id, outputs=[offer, status], api_name="chat_use_cpu")
