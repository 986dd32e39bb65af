"""Datasets tab: upload -> validated import -> table of datasets -> preview and statistics."""
from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr
import pandas as pd

from storage.db import Database
from studio.datasets import service as datasets
from studio.datasets.formats import FORMAT_NAMES
from studio.datasets.options import DEFAULT_INSTRUCTION, ImportOptions
from studio.datasets.problems import DatasetImportError, Problem
from ui import widgets
from ui.i18n import add, localize, localized, t

add("ds.intro", "Upload instruction, chat or image-text data: JSON, JSONL, CSV/TSV, Parquet, or a .zip with "
    "a data file and its images (or images with same-name .txt captions). The format is detected; every problem "
    "is reported at once with its file and row, and a failed import writes nothing.",
    "上传指令、对话或图文数据：JSON、JSONL、CSV/TSV、Parquet，或包含数据文件和图片的 .zip（也可以是图片加同名 .txt "
    "说明）。格式自动识别；所有问题一次性列出（文件和行号），导入失败不会写入任何内容。")
add("ds.upload", "Data file or .zip", "数据文件或 .zip")
add("ds.name", "Name (optional)", "名称（可选）")
add("ds.format", "Format", "格式")
add("ds.options", "Import options", "导入选项")
add("ds.val", "Validation split", "验证集比例")
add("ds.dedupe", "Remove exact duplicates", "去除完全重复的行")
add("ds.limit", "Row limit (0 = all)", "行数上限（0 = 全部）")
add("ds.skip", "Import the good rows and skip bad ones", "跳过有问题的行，只导入正确的行")
add("ds.instruction", "Instruction for image captions", "图片说明数据使用的指令")
add("ds.map", "Column mapping (source=field, comma separated)", "列映射（源列=字段，用逗号分隔）")
add("ds.image_root", "Image folder (optional): relative image paths are read from here", "图片文件夹（可选）：相对图片路径从这里读取")
add("ds.image_root_info", "A folder beside the data file, inside the archive, or in the workspace (e.g. "
    "uploads/photos). Empty: the data file's folder, then its parent folders (and their images/ folders) up to the "
    "upload's root.",
    "数据文件旁、压缩包内或工作区中的文件夹（例如 uploads/photos）。留空：先找数据文件所在文件夹，再向上逐级查找"
    "（包括其中的 images/ 文件夹），直到上传内容的根目录。")
add("ds.import", "Import dataset", "导入数据集")
add("ds.problems", "Problems found", "发现的问题")
add("ds.table", "Datasets", "数据集列表")
add("ds.select", "Dataset", "数据集")
add("ds.row", "Row", "行")
add("ds.preview", "Preview (what the model will see)", "预览（模型将看到的内容）")
add("ds.chosen", "Chosen answer (preferred)", "选中的回答（更好）")
add("ds.rejected", "Rejected answer", "被拒绝的回答")
add("ds.pair_intro", "A preference row: the prompt above, its two answers side by side. KTO rows show their one "
    "completion on the side of its label (desirable: left, undesirable: right).",
    "偏好数据行：上方是提示，下方并排显示两个回答。KTO 数据行只有一个回答，按其标签显示在左侧（好）或右侧（差）。")
add("ds.intro_pref", "Preference data (for DPO, KTO and reward models) is read too: prompt/chosen/rejected (text or "
    "messages, UltraFeedback style), HH-RLHF transcripts, LLaMA-Factory's ShareGPT and Alpaca ranking forms, and "
    "KTO's prompt/completion/label.",
    "也可导入偏好数据（用于 DPO、KTO 和奖励模型）：prompt/chosen/rejected（文本或消息列表，UltraFeedback 风格）、"
    "HH-RLHF 对话记录、LLaMA-Factory 的 ShareGPT 与 Alpaca 排序格式，以及 KTO 的 prompt/completion/label。")
add("ds.rename", "New name", "新名称")
add("ds.rename_btn", "Rename", "重命名")
add("ds.delete_btn", "Delete dataset", "删除数据集")
add("ds.refresh", "Refresh", "刷新")
add("ds.stats", "Token statistics", "Token 统计")
add("ds.stats_intro", "Token lengths as the chosen model's tokenizer (and image processor) sees them, against "
    "the cut-off length. Rows cut inside their image tokens fail in training, so they are counted separately.",
    "按所选模型的分词器（及图像处理器）计算的 token 长度，并与截断长度比较。在图像 token 内部被截断的行会导致训练失败，因此单独统计。")
add("ds.stats_model", "Model (its tokenizer)", "模型（使用其分词器）")
add("ds.cutoff", "Cut-off length (tokens)", "截断长度（token）")
add("ds.max_pixels", "Max pixels per image (vision models)", "每张图片最大像素数（视觉模型）")
add("ds.stats_btn", "Compute statistics", "计算统计")
add("ds.hist", "Rows by token length", "按 token 长度的行数分布")

AUTO = "auto-detect"
TABLE_COLUMNS = ["ID", "Name", "Format", "Kind", "Rows", "Train", "Validation", "Images", "Skipped", "Size", "Created (UTC)"]
PROBLEM_COLUMNS = ["Where", "Problem", "How to fix"]


def datasets_table(db: Database) -> pd.DataFrame:
    rows = [[d.id, d.name, d.format, datasets.dataset_kind(d), d.num_rows, d.num_train, d.num_validation, d.num_images, d.num_skipped,
             widgets.human_bytes(d.size_bytes), f"{d.created_at:%Y-%m-%d %H:%M}"] for d in datasets.list_datasets(db)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def dataset_choices(db: Database) -> list[tuple[str, int]]:
    return [(f"#{d.id} {d.name} ({d.num_rows} rows)", d.id) for d in datasets.list_datasets(db)]


def parse_column_map(text: str) -> dict[str, str]:
    mapping = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"column mapping entry {item!r} must look like source=field")
        mapping[source.strip()] = target.strip()
    return mapping


def run_import(db: Database, upload, name, fmt, val_fraction, dedupe, limit, skip_bad, instruction, column_map,
               image_root=""):
    """Returns (message, problems table)."""
    if not upload:
        return "Choose a file to upload first.", gr.update(visible=False)
    try:
        options = ImportOptions(name=(name or "").strip() or None, format=None if fmt == AUTO else fmt,
                                column_map=parse_column_map(column_map), instruction=instruction or DEFAULT_INSTRUCTION,
                                val_fraction=float(val_fraction or 0), dedupe=bool(dedupe),
                                limit=int(limit) if limit else None, on_error="skip" if skip_bad else "fail",
                                image_root=(image_root or "").strip() or None)
    except ValueError as e:
        return f"**Not imported:** {e}", gr.update(visible=False)
    if errors := options.check():
        return "**Not imported:** " + "; ".join(errors), gr.update(visible=False)
    try:
        result = datasets.import_upload(db, upload, Path(upload).name, options)  # a refused upload is removed
    except DatasetImportError as e:
        table = pd.DataFrame([[p.where(), p.message, p.hint] for p in e.problems], columns=PROBLEM_COLUMNS)
        return (f"**Not imported — {len(e.problems)} problem(s).** Nothing was written. Fix the file, or tick "
                f"*{'skip bad rows'}* to import the good rows.", gr.update(value=table, visible=True))
    except FileNotFoundError as e:  # the browser's upload never reached the server's temporary folder
        return f"**Not imported:** {e}", gr.update(visible=False)
    d, report = result.dataset, result.report
    skipped = f", {d.num_skipped} bad rows skipped (see the table)" if d.num_skipped else ""
    problems = [Problem(**p) for p in report.problems]  # the report keeps them as plain dicts
    table = pd.DataFrame([[p.where(), p.message, p.hint] for p in problems], columns=PROBLEM_COLUMNS)
    note = report.images_note()
    found = f" {note[:1].upper()}{note[1:]}." if note else ""
    return (f"**Imported #{d.id} {d.name}** as {d.format}: {d.num_train} training rows, {d.num_validation} "
            f"validation rows, {d.num_images} images{skipped}. {report.accounting()}.{found}",
            gr.update(value=table, visible=bool(problems)))


def row_as_chat(db: Database, dataset_id, row_index) -> list[dict]:
    """One canonical row in the Chatbot's messages format, images as files."""
    if not dataset_id:
        return []
    rows = datasets.preview(db, int(dataset_id), n=1, offset=int(row_index or 0))
    if not rows:
        return []
    return as_chatbot(rows[0]["messages"])


def as_chatbot(canonical_messages: list[dict]) -> list[dict]:
    messages = []
    for m in canonical_messages:
        role = "assistant" if m["role"] == "assistant" else "user"
        prefix = "[system] " if m["role"] == "system" else ""
        for part in m["content"]:
            if part["type"] == "image":
                messages.append({"role": role, "content": {"path": part["image"]}})
            else:
                messages.append({"role": role, "content": prefix + part["text"]})
    return messages


def row_answers(db: Database, dataset_id, row_index) -> tuple[list[dict], list[dict], bool]:
    """(chosen pane, rejected pane, is a preference/KTO row): a pair's answers side by side; a KTO
    completion on the side of its label."""
    from studio.datasets.preference import row_kind

    rows = datasets.preview(db, int(dataset_id), n=1, offset=int(row_index or 0)) if dataset_id else []
    if not rows or row_kind(rows[0]) == "sft":
        return [], [], False
    row = rows[0]
    if row_kind(row) == "kto":
        completion = as_chatbot(row["completion"])
        return (completion, [], True) if row["label"] else ([], completion, True)
    return as_chatbot(row["chosen"]), as_chatbot(row["rejected"]), True


def model_choices() -> list[tuple[str, str]]:
    from studio.models import registry

    return [(m.display_name, m.ref) for m in registry.list_builtin()]


def histogram_frame(stats: dict) -> pd.DataFrame:
    edges, counts = stats["histogram"]["edges"], stats["histogram"]["counts"]
    labels = [f"{int(edges[i])}-{int(edges[i + 1])}" for i in range(len(counts))]
    return pd.DataFrame({"tokens": labels, "rows": counts})


def stats_summary(stats: dict) -> str:
    lines = [f"**{stats['rows']} rows**, {stats['turns']} turns, {stats['images']} images "
             f"({stats['image_tokens']} image tokens). Tokens per row: min {stats['min_tokens']}, median "
             f"{stats['median_tokens']}, mean {stats['mean_tokens']:.0f}, max {stats['max_tokens']}.",
             f"**{stats['rows_over_cutoff']} rows** exceed the cut-off of {stats['cutoff_len']} tokens and will be cut."]
    if stats.get("rows_cut_inside_image"):
        lines.append(f"⚠️ **{stats['rows_cut_inside_image']} rows would be cut inside their image tokens** "
                     "(\"image features and image tokens do not match\"): raise the cut-off or lower max pixels.")
    return "\n\n".join(lines)


def compute_stats(db: Database, dataset_id, model_ref, cutoff, max_pixels):
    """Generator: queue the statistics job and report until its result arrives."""
    from studio import activity

    if not dataset_id or not model_ref:
        yield "Pick a dataset and a model first.", gr.update()
        return
    job_id = datasets.request_statistics(db, int(dataset_id), model_ref, cutoff_len=int(cutoff),
                                         max_pixels=int(max_pixels) if max_pixels else None)
    for state in activity.wait_for_job(db, job_id):
        if state.status == "queued":
            yield "Waiting for the worker (it runs one job at a time)…", gr.update()
        elif not state.finished:
            yield f"Computing… {state.message}", gr.update()
    if state.status != "succeeded":
        yield f"Statistics failed: {state.error}", gr.update()
        return
    yield stats_summary(state.result), histogram_frame(state.result)


def render(db: Database) -> dict:
    """Builds the tab; returns the components other tabs react to."""
    gr.Markdown(t("ds.intro"))
    gr.Markdown(t("ds.intro_pref"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            upload = gr.File(label=t("ds.upload"), file_types=[".json", ".jsonl", ".csv", ".tsv", ".parquet", ".zip"],
                             type="filepath", elem_id="dataset-upload")
            name = gr.Textbox(label=t("ds.name"), max_length=200)
            fmt = gr.Dropdown(label=t("ds.format"), choices=[(t("v.auto_detect"), AUTO), *FORMAT_NAMES], value=AUTO)
            with gr.Accordion(t("ds.options"), open=False):
                val = gr.Slider(label=t("ds.val"), minimum=0, maximum=0.5, step=0.01, value=0.0)
                dedupe = gr.Checkbox(label=t("ds.dedupe"), value=True)
                limit = gr.Number(label=t("ds.limit"), value=0, precision=0, minimum=0)
                skip_bad = gr.Checkbox(label=t("ds.skip"), value=False)
                instruction = gr.Textbox(label=t("ds.instruction"), value=DEFAULT_INSTRUCTION)
                column_map = gr.Textbox(label=t("ds.map"), placeholder="prompt=instruction, answer=output")
                image_root = gr.Textbox(label=t("ds.image_root"), info=t("ds.image_root_info"), value="",
                                        placeholder="images", elem_id="dataset-image-root")
            import_btn = gr.Button(t("ds.import"), variant="primary", elem_id="dataset-import")
            message = gr.Markdown(elem_id="dataset-import-message")
            problems = gr.Dataframe(headers=PROBLEM_COLUMNS, label=t("ds.problems"), visible=False, wrap=True,
                                    interactive=False)
        with gr.Column(scale=3):
            table = gr.Dataframe(value=localized(lambda: datasets_table(db)), headers=TABLE_COLUMNS,
                                 label=t("ds.table"), interactive=False, elem_id="datasets-table")
            with gr.Row():
                selected = gr.Dropdown(label=t("ds.select"), choices=dataset_choices(db), scale=3)
                row = gr.Number(label=t("ds.row"), value=0, precision=0, minimum=0, scale=1)
                refresh = gr.Button(t("ds.refresh"), scale=0)
            # a row is read from its start: no scrolling to the last message, which hid the first lines
            preview = gr.Chatbot(label=t("ds.preview"), height=380, elem_id="dataset-preview", autoscroll=False)
            with gr.Group(visible=False) as pair_box:
                gr.Markdown(t("ds.pair_intro"))
                with gr.Row():
                    chosen = gr.Chatbot(label=t("ds.chosen"), height=240, elem_id="dataset-chosen")
                    rejected = gr.Chatbot(label=t("ds.rejected"), height=240, elem_id="dataset-rejected")
            with gr.Row():
                new_name = gr.Textbox(label=t("ds.rename"), scale=3)
                rename_btn = gr.Button(t("ds.rename_btn"), scale=0)
                delete_btn = gr.Button(t("ds.delete_btn"), variant="stop", scale=0)
            manage_msg = gr.Markdown()
            with gr.Accordion(t("ds.stats"), open=True):
                gr.Markdown(t("ds.stats_intro"))
                with gr.Row():
                    choices = model_choices()
                    stats_model = gr.Dropdown(label=t("ds.stats_model"), choices=choices, value=choices[0][1],
                                              allow_custom_value=True, scale=3)
                    cutoff = gr.Number(label=t("ds.cutoff"), value=1024, precision=0, minimum=16, maximum=131072)
                    max_pixels = gr.Number(label=t("ds.max_pixels"), value=512 * 512, precision=0, minimum=784)
                stats_btn = gr.Button(t("ds.stats_btn"))
                stats_msg = gr.Markdown(elem_id="dataset-stats")
                hist = gr.BarPlot(x="tokens", y="rows", label=t("ds.hist"), x_label_angle=-30, sort=None, height=260)

    def _after_change(selected_id=None, request: gr.Request | None = None):
        choices = dataset_choices(db)
        return localize(datasets_table(db), request), gr.update(choices=choices, value=selected_id)

    def _import(upload_path, name_, fmt_, val_, dedupe_, limit_, skip_bad_, instruction_, column_map_, image_root_,
                request: gr.Request | None = None):
        msg, probs = run_import(db, upload_path, name_, fmt_, val_, dedupe_, limit_, skip_bad_, instruction_,
                                column_map_, image_root_)
        if isinstance(probs, dict) and isinstance(probs.get("value"), pd.DataFrame):
            probs["value"] = localize(probs["value"], request)
        newest = datasets.list_datasets(db)
        selected_id = newest[0].id if newest and msg.startswith("**Imported") else None
        return (msg, probs, *_after_change(selected_id, request))

    import_btn.click(_import, inputs=[upload, name, fmt, val, dedupe, limit, skip_bad, instruction, column_map,
                                      image_root],
                     outputs=[message, problems, table, selected], api_name="import_dataset")
    selected_event = selected.change(lambda d: (row_as_chat(db, d, 0), 0), inputs=selected, outputs=[preview, row],
                                     api_name="select_dataset")
    row.change(lambda d, r: row_as_chat(db, d, r), inputs=[selected, row], outputs=preview, api_name="preview_row")

    def _answers(d, r):
        left, right, is_pair = row_answers(db, d, r)
        return left, right, gr.update(visible=is_pair)

    for trigger in (selected, row):  # a new dataset resets the row to 0, which may not fire a change
        trigger.change(_answers, inputs=[selected, row], outputs=[chosen, rejected, pair_box],
                       api_name=f"preview_answers_{'dataset' if trigger is selected else 'row'}")

    def _refresh(d, request: gr.Request | None = None):
        return _after_change(d, request)

    refresh.click(_refresh, inputs=selected, outputs=[table, selected], api_name="refresh_datasets")

    def _rename(d, new, request: gr.Request | None = None):
        if not d or not (new or "").strip():
            return "Pick a dataset and type its new name.", *_after_change(d, request)
        datasets.rename_dataset(db, int(d), new.strip())
        return f"Renamed #{int(d)}.", *_after_change(d, request)

    def _delete(d, request: gr.Request | None = None):
        if not d:
            return "Pick a dataset to delete.", *_after_change(None, request)
        datasets.delete_dataset(db, int(d))
        return f"Deleted #{int(d)} and its files.", *_after_change(None, request)

    rename_btn.click(_rename, inputs=[selected, new_name], outputs=[manage_msg, table, selected], api_name="rename_dataset")
    delete_btn.click(_delete, inputs=selected, outputs=[manage_msg, table, selected], api_name="delete_dataset")
    stats_btn.click(functools.partial(compute_stats, db), inputs=[selected, stats_model, cutoff, max_pixels],
                    outputs=[stats_msg, hist], api_name="dataset_statistics")
    # the histogram is cheap (a tokenizer pass in the worker): computed for every dataset picked,
    # so the box is never empty while the button waits to be found
    selected_event.then(functools.partial(compute_stats, db), inputs=[selected, stats_model, cutoff, max_pixels],
                        outputs=[stats_msg, hist], api_visibility="private")
    return {"table": table, "selected": selected}
