"""Export tab: turn an adapter into a merged model, a GGUF file (or package the adapter), verify it,
download it.

Downloads are links to ``/download/export/<id>`` (ui/downloads.py): streamed from disk, addressed
by export id only, behind the studio's login. Unverified exports are never offered.
"""
from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from storage.db import Database
from studio.export import service as exports
from studio.export.errors import ExportError
from studio.export.options import DEFAULT_GGUF_TYPE, DTYPES, GGUF
from studio.training import history
from ui.downloads import download_url
from ui.i18n import add, localize, localized, t
from ui.i18n import choices as translated_choices
from ui.widgets import human_bytes

REFRESH_S = 2.0
COLUMNS = ["ID", "Adapter", "Kind", "Status", "Verified", "Size", "SHA-256", "Created (UTC)", "Progress"]

add("ex.intro", "A **merged model** is the base model with the adapter folded in: it loads with plain transformers "
    "(and converts for vLLM or llama.cpp) without PEFT. The **adapter** alone is a few MB and loads with "
    "`PeftModel.from_pretrained`. Every merged export is verified (its logits are compared with the adapter on "
    "the base) before it is offered for download. **GGUF** is the merged model as one file for llama.cpp, Ollama "
    "and LM Studio, with an Ollama Modelfile; it is read back and compared with the merged model before it is "
    "offered.",
    "**合并模型**是把适配器融合进基础模型：无需 PEFT，用 transformers 即可加载（也可转换给 vLLM 或 llama.cpp）。"
    "**单独的适配器**只有几 MB，用 `PeftModel.from_pretrained` 加载。每个合并导出在提供下载前都会经过验证（与基础模型加适配器的 logits 对比）。"
    "**GGUF** 是合并模型的单文件格式，供 llama.cpp、Ollama 和 LM Studio 使用，并附带 Ollama Modelfile；"
    "提供下载前会重新读取该文件并与合并模型对比。")
add("ex.kind_merged", "merged model", "合并模型")
add("ex.kind_adapter", "adapter only", "仅适配器")
add("ex.kind_gguf", "GGUF (llama.cpp / Ollama / LM Studio)", "GGUF（llama.cpp / Ollama / LM Studio）")
add("ex.gguf_type", "GGUF type", "GGUF 类型")
add("ex.gguf_q8_0", "Q8_0 (8-bit, half the size of F16)", "Q8_0（8 位，体积为 F16 的一半）")
add("ex.gguf_f16", "F16 (16-bit, near-exact)", "F16（16 位，几乎无损）")
add("ex.gguf_bf16", "BF16 (16-bit)", "BF16（16 位）")
add("ex.gguf_info", "Text models only: Llama family (incl. SmolLM2) and Qwen2/2.5. Vision-language models (Qwen2.5-VL) "
    "are not offered as GGUF (llama.cpp needs a separate vision projector file): export the merged model. "
    "For Q4_K_M / Q5_K_M, run llama.cpp's llama-quantize on the F16 file.",
    "仅限文本模型：Llama 系列（含 SmolLM2）和 Qwen2/2.5。视觉语言模型（Qwen2.5-VL）不提供 GGUF"
    "（llama.cpp 需要单独的视觉投影文件）：请导出合并模型。需要 Q4_K_M / Q5_K_M 时，请用 llama.cpp 的 "
    "llama-quantize 处理 F16 文件。")
add("ex.adapter", "Adapter", "适配器")
add("ex.kind", "What to export", "导出内容")
add("ex.dtype", "Weights precision", "权重精度")
add("ex.shard", "Shard size", "分片大小")
add("ex.start", "Export", "导出")
add("ex.table", "Exports", "导出记录")
add("ex.selected", "Export", "导出")
add("ex.delete", "Delete export", "删除导出")


def adapter_choices(db: Database, kind: str | None = None) -> list[tuple[str, int]]:
    """The adapters this kind of export can be made of: a reward model (a score head; it writes no
    text) only as 'adapter only', so the merged and GGUF choices leave it out."""
    return [(a["label"] + (" · reward model" if a["stage"] == "reward" else ""), a["id"])
            for a in history.adapters(db) if kind in (None, "adapter") or a["stage"] != "reward"]


def exports_table(db: Database) -> pd.DataFrame:
    rows = []
    for e in exports.list_exports(db):
        verified = {True: "yes", False: "FAILED", None: ""}[e.verified]
        progress = e.progress.get("message", "") if e.status in ("queued", "running") else (e.error or "")
        kind = f"{e.kind} {e.options.get('gguf_type')}" if e.kind == GGUF else e.kind
        rows.append([e.id, e.adapter_id, kind, e.status, verified, human_bytes(e.size_bytes),
                     (e.sha256 or "")[:16], f"{e.created_at:%Y-%m-%d %H:%M}", progress[:160]])
    return pd.DataFrame(rows, columns=COLUMNS)


def export_choices(db: Database) -> list[tuple[str, int]]:
    return [(f"#{e.id} {e.kind}{' ' + str(e.options.get('gguf_type')) if e.kind == GGUF else ''} of adapter "
             f"#{e.adapter_id} ({e.status})", e.id) for e in exports.list_exports(db)]


def details_html(db: Database, export_id) -> str:
    if not export_id:
        return ""
    try:
        e = exports.get_export(db, int(export_id))
    except ExportError as err:
        return html.escape(str(err))
    lines = [f"<b>Export #{e.id}</b> · {e.kind} · {e.status}"]
    v = e.verification or {}
    if e.kind == GGUF and v.get("top1_agreement") is not None:
        tokens = v.get("tokenizer") or {}
        tolerance = f" (tolerance {v['tolerance']:.2g})" if v.get("tolerance") is not None else ""
        lines.append(f"GGUF {v.get('gguf_type', '').upper()} read back with transformers: max |logit difference| to the "
                     f"merged model {v['max_abs_diff']:.3g}{tolerance}, top-1 agreement {v['top1_agreement']:.1%} over "
                     f"{v.get('positions', 0)} positions; tokenizer ids identical on "
                     f"{tokens.get('prompts', 0) - len(tokens.get('mismatches') or [])}/{tokens.get('prompts', 0)} prompts"
                     f" → {'verified' if e.verified else 'FAILED'}")
    elif v.get("max_abs_diff") is not None:
        lines.append(f"Verification: max |logit difference| {v['max_abs_diff']:.2e} (tolerance {v.get('tolerance', 0):.0e})"
                     f" → {'verified' if e.verified else 'FAILED'}")
    if e.downloadable:
        lines.append(f"Size {human_bytes(e.size_bytes)} · SHA-256 <code>{e.sha256}</code>")
        lines.append(f'<a class="download-link" href="{download_url(e.id)}" download>⬇ Download {e.kind} '
                     f'(.zip, {human_bytes(e.size_bytes)})</a>')
    elif e.status in ("queued", "running"):
        lines.append(html.escape(e.progress.get("message", "waiting for the worker…")))
    elif e.error:
        lines.append(f'<span class="run-error">{html.escape(e.error)}</span>')
    return "<div class='export-details'>" + "<br>".join(lines) + "</div>"


def start(db: Database, adapter_id, kind, dtype, shard, gguf_type=None):
    if not adapter_id:
        return "Pick an adapter first (train a run to get one).", None
    try:
        export_id = exports.start_export(db, int(adapter_id), kind=kind, dtype=dtype, shard_size=shard,
                                         gguf_type=gguf_type if kind == GGUF else None)
    except (ExportError, ValueError) as e:
        return f"⚠️ {e}", None
    return f"Export #{export_id} queued.", export_id


CSS = """
.download-link { display: inline-block; margin-top: 6px; padding: 6px 14px; border-radius: 8px; background: #4f46e5;
                 color: white !important; text-decoration: none; font-weight: 600; }
.export-details { line-height: 1.8; }
"""


def render(db: Database) -> dict:
    gr.Markdown(t("ex.intro"))
    with gr.Row():
        adapter = gr.Dropdown(label=t("ex.adapter"), choices=adapter_choices(db, "merged"), scale=3,
                              elem_id="export-adapter")
        kind = gr.Radio(label=t("ex.kind"), choices=[(t("ex.kind_merged"), "merged"), (t("ex.kind_adapter"), "adapter"),
                                                     (t("ex.kind_gguf"), GGUF)],
                        value="merged", scale=2, elem_id="export-kind")
        dtype = gr.Dropdown(label=t("ex.dtype"), choices=translated_choices(list(DTYPES)), value="auto", scale=1)
        shard = gr.Dropdown(label=t("ex.shard"), choices=["500MB", "2GB", "5GB", "10GB"], value="2GB", scale=1)
        gguf_type = gr.Dropdown(label=t("ex.gguf_type"), info=t("ex.gguf_info"), value=DEFAULT_GGUF_TYPE, scale=2,
                                choices=[(t("ex.gguf_q8_0"), "q8_0"), (t("ex.gguf_f16"), "f16"), (t("ex.gguf_bf16"), "bf16")],
                                visible=False, elem_id="export-gguf-type")
    def _kind(k, current):
        options = adapter_choices(db, k)
        keep = current if current in {v for _, v in options} else None
        return gr.update(visible=k == GGUF), gr.update(visible=k == "merged"), gr.update(choices=options, value=keep)

    kind.change(_kind, inputs=[kind, adapter], outputs=[gguf_type, shard, adapter], api_name="export_kind_changed",
                show_progress="hidden")
    start_btn = gr.Button(t("ex.start"), variant="primary", elem_id="export-start")
    message = gr.Markdown()
    table = gr.Dataframe(value=localized(lambda: exports_table(db)), headers=COLUMNS, interactive=False, wrap=True,
                         label=t("ex.table"), elem_id="exports-table")
    with gr.Row():
        selected = gr.Dropdown(label=t("ex.selected"), choices=export_choices(db), scale=3, elem_id="export-selected")
        delete_btn = gr.Button(t("ex.delete"), variant="stop", scale=0)
    details = gr.HTML(elem_id="export-details")

    def _start(a, k, d, s, g, request: gr.Request | None = None):
        msg, export_id = start(db, a, k, d, s, g)
        return msg, localize(exports_table(db), request), gr.update(choices=export_choices(db), value=export_id)

    start_btn.click(_start, inputs=[adapter, kind, dtype, shard, gguf_type], outputs=[message, table, selected],
                    api_name="start_export")

    def _tick(export_id, request: gr.Request | None = None):
        return localize(exports_table(db), request), gr.update(choices=export_choices(db)), details_html(db, export_id)

    gr.Timer(REFRESH_S).tick(_tick, inputs=selected, outputs=[table, selected, details], show_progress="hidden",
                             api_name="refresh_exports")
    selected.change(lambda e: details_html(db, e), inputs=selected, outputs=details, api_name="export_details")

    def _delete(export_id, request: gr.Request | None = None):
        def table_now():
            return localize(exports_table(db), request)

        if not export_id:
            return "Pick an export to delete.", table_now(), gr.update()
        try:
            freed = exports.delete_export(db, int(export_id))
        except ExportError as e:
            return f"⚠️ {e}", table_now(), gr.update()
        return (f"Deleted export #{int(export_id)}; {human_bytes(freed)} freed.", table_now(),
                gr.update(choices=export_choices(db), value=None))

    delete_btn.click(_delete, inputs=selected, outputs=[message, table, selected], api_name="delete_export",
                     js="(e) => confirm('Delete this export and its files?') ? e : null")
    return {"adapter": adapter, "kind": kind}


def select_run(db: Database, run_id, kind: str | None = "merged"):
    """For 'export this run': preselect the run's adapter (among those the chosen kind can export)."""
    if not run_id:
        return gr.update()
    options = adapter_choices(db, kind)
    ids = [a["id"] for a in history.adapters(db) if a["run_id"] == int(run_id) and a["id"] in {v for _, v in options}]
    return gr.update(choices=options, value=ids[0] if ids else None)
