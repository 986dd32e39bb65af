"""Train tab: model, data, method and hyperparameters as typed controls -> a RunSpec -> start_run.

Every widget is registered under the dotted spec field it fills (``FORM``), callbacks receive the
values as a dict, and ``spec_from_form`` turns them into a typed ``RunSpec``: no positional lists.
"""
from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from storage.db import Database
from studio import estimate as est
from studio.datasets import service as datasets
from studio.methods import METHODS
from studio.planning import MemoryPlan, cpu_plan_text, dataset_images_per_sample, plan_memory
from studio.spec import LR_MAX, LR_MIN, DataSpec, RunSpec, StageSettings, TrainSettings, VisionSettings, parse_spec
from ui import spec_widgets
from ui.tabs import train_compare
from ui.i18n import add, t, wants_chinese
from ui.i18n import choices as translated_choices
from ui.memory_bar import memory_bar_html

add("tr.intro", "Build a run: pick a model, a dataset and a method; the memory estimate updates as you go. "
    "The settings are the run's spec, shown below as YAML: the same file runs headless with "
    "`python -m studio train spec.yaml`.",
    "配置一次训练：选择模型、数据集和方法，显存估算会随设置实时更新。这些设置就是本次运行的配置（下方 YAML），"
    "同一文件可用 `python -m studio train spec.yaml` 在命令行运行。")
add("tr.model", "Model (built-in, Hub id or local folder)", "模型（内置、Hub ID 或本地文件夹）")
add("tr.trust", "Allow this model's own Python code (trust_remote_code)", "允许运行该模型自带的 Python 代码（trust_remote_code）")
add("tr.dataset", "Dataset", "数据集")
add("tr.name", "Run name (optional)", "运行名称（可选）")
add("tr.method", "Method", "方法")
add("tr.advisor", "Method advisor: which methods fit this model, device and dataset", "方法顾问：哪些方法适合此模型、设备和数据集")
add("tr.advise_on", "Device to advise for", "按哪种设备给出建议")
add("tr.advise", "Rank the methods", "为方法排序")
add("tr.advice_pick", "Recommended methods (best first)", "推荐的方法（最佳在前）")
add("tr.apply_advice", "Use this method", "使用此方法")
add("v.gpu_card", "the GPU chosen above", "上方选择的 GPU")
add("v.this_cpu", "this machine's CPU (RAM)", "本机 CPU（内存）")
add("tr.compare_methods", "Compare all methods on this model (default presets, this run's settings)",
    "在此模型上比较所有方法（默认预设，本次运行的设置）")
add("tr.preset", "Preset (a starting point, not a rule)", "预设（起点而非规定）")
add("tr.rank", "Rank r", "秩 r")
add("tr.alpha", "Alpha", "Alpha")
add("tr.dropout", "Dropout", "Dropout")
add("tr.targets", "Layers that get adapters", "添加适配器的层")
add("tr.custom", "Custom module names (comma separated)", "自定义模块名（逗号分隔）")
add("tr.dora", "DoRA (learn magnitudes too)", "DoRA（同时学习幅度）")
add("tr.rslora", "rsLoRA (rank-stable scaling)", "rsLoRA（秩稳定缩放）")
add("tr.bits", "Base model bits", "基础模型量化位数")
add("tr.double_quant", "Double quantization", "双重量化")
add("tr.init_r", "Initial rank", "初始秩")
add("tr.target_r", "Target average rank", "目标平均秩")
add("tr.tinit", "Warm-up steps before pruning (0 = 10% of the run)", "剪枝前的预热步数（0 = 训练的 10%）")
add("tr.tfinal", "Final steps with fixed ranks (0 = 20% of the run)", "最后固定秩的步数（0 = 训练的 20%）")
add("tr.deltaT", "Steps between rank reallocations", "两次秩分配之间的步数")
add("tr.hyper", "Training settings", "训练设置")
add("tr.advanced", "Advanced settings (layers, rank, learning rate, batch, cut-off...)",
    "高级设置（层、秩、学习率、批大小、截断长度……）")
add("tr.epochs", "Epochs", "训练轮数")
add("tr.max_steps", "Max steps (0 = by epochs)", "最大步数（0 = 按轮数）")
add("tr.lr", "Learning rate", "学习率")
add("tr.scheduler", "Learning-rate schedule", "学习率调度")
add("tr.warmup", "Warm-up share", "预热比例")
add("tr.batch", "Batch size per device", "每设备批大小")
add("tr.accum", "Gradient accumulation", "梯度累积")
add("tr.cutoff", "Cut-off length (tokens)", "截断长度（token）")
add("tr.precision", "Precision", "精度")
add("tr.gc", "Gradient checkpointing (less memory, ~30% slower)", "梯度检查点（省显存，约慢 30%）")
add("tr.eval", "Evaluation share (when the dataset has no validation split)", "评估集比例（数据集无验证集时）")
add("tr.seed", "Seed", "随机种子")
add("tr.logging", "Log every N steps", "每 N 步记录")
add("tr.save", "Checkpoint every N steps", "每 N 步保存检查点")
add("tr.gpus", "GPUs (processes)", "GPU 数（进程数）")
add("tr.auto_fix", "Out of memory: retry once with a memory fix", "内存不足时：用省内存的修复方案自动重试一次")
add("tr.vision", "Vision settings (Qwen2.5-VL)", "视觉设置（Qwen2.5-VL）")
add("tr.min_pixels", "Min pixels per image", "每张图片最小像素")
add("tr.max_pixels", "Max pixels per image", "每张图片最大像素")
add("tr.tower", "Vision tower", "视觉编码器")
add("tr.projector", "Projector (merger)", "投影层（merger）")
add("tr.stage", "Training stage", "训练阶段")
add("tr.stage_intro", "sft learns from instruction rows. dpo and kto learn from preferences (a preference or KTO "
    "dataset) against a reference: the base with the adapter off, or the adapter you continue. reward trains a "
    "reward model (a score head on the base + LoRA) from preference pairs.",
    "sft 从指令数据学习。dpo 和 kto 从偏好数据（偏好或 KTO 数据集）学习，并以参考模型为基准：关闭适配器的基础模型，"
    "或所继续训练的适配器。reward 从偏好对训练奖励模型（基础模型 + LoRA 上的打分头）。")
add("tr.beta", "Beta (how close to the reference)", "Beta（与参考模型的接近程度）")
add("tr.loss_type", "DPO loss", "DPO 损失")
add("tr.label_smoothing", "Label smoothing", "标签平滑")
add("tr.desirable", "Weight of desirable completions", "好回答的权重")
add("tr.undesirable", "Weight of undesirable completions", "差回答的权重")
add("tr.start_from", "Continue this adapter (usually your SFT adapter; empty: a new adapter)",
    "继续训练此适配器（通常是 SFT 适配器；留空：新建适配器）")
add("tr.memory", "GPU memory", "GPU 显存")
add("tr.card", "GPU to check against", "对照的 GPU")
add("tr.spec", "Run spec (YAML)", "运行配置（YAML）")
add("tr.download_spec", "Download spec", "下载配置")
add("tr.start", "Start training", "开始训练")
add("tr.start_anyway", "Start anyway", "仍然开始")

DEFAULT_CARD = "RTX 4090 24 GB"
CARD_CHOICES = [c.name for c in est.GPU_CARDS]
# Which model class each dotted form path belongs to: INT_FIELDS / NONE_IF_ZERO follow from the fields.
SECTIONS = {"train": TrainSettings, "vision": VisionSettings, "data": DataSpec, "stage": StageSettings}
STAGE_LABELS = {"beta": "tr.beta", "loss_type": "tr.loss_type", "label_smoothing": "tr.label_smoothing",
                "desirable_weight": "tr.desirable", "undesirable_weight": "tr.undesirable"}
# which stage settings each stage uses (the others keep their defaults, hidden)
STAGE_FIELDS = {"dpo": ("beta", "loss_type", "label_smoothing", "start_from"),
                "kto": ("beta", "desirable_weight", "undesirable_weight", "start_from")}
# Labels of the method fields that have one (others show their field name); bounds, kind and help
# come from the settings classes of the method table.
METHOD_LABELS = {"r": "tr.rank", "alpha": "tr.alpha", "dropout": "tr.dropout", "use_dora": "tr.dora",
                 "use_rslora": "tr.rslora", "bits": "tr.bits", "double_quant": "tr.double_quant",
                 "init_r": "tr.init_r", "target_r": "tr.target_r", "tinit": "tr.tinit", "tfinal": "tr.tfinal",
                 "deltaT": "tr.deltaT"}
TRAIN_LABELS = {"epochs": "tr.epochs", "max_steps": "tr.max_steps", "learning_rate": "tr.lr",
                "batch_size": "tr.batch", "grad_accum": "tr.accum", "cutoff_len": "tr.cutoff",
                "lr_scheduler": "tr.scheduler", "warmup_ratio": "tr.warmup", "precision": "tr.precision",
                "gradient_checkpointing": "tr.gc", "seed": "tr.seed", "logging_steps": "tr.logging",
                "save_steps": "tr.save", "num_processes": "tr.gpus", "auto_memory_fix": "tr.auto_fix"}
TRAIN_ROWS = [("max_steps", "learning_rate"), ("batch_size", "grad_accum", "cutoff_len"),
              ("lr_scheduler", "warmup_ratio", "precision"), ("gradient_checkpointing", "auto_memory_fix"),
              ("seed", "logging_steps", "save_steps", "num_processes")]


def field_owner(path: str, method: str | None = None) -> tuple[Any, str] | None:
    """(pydantic model, field name) a dotted form path fills, or None (e.g. ``model``, ``name``)."""
    head, _, rest = path.partition(".")
    if head == "method" and rest and "." not in rest:
        cls = METHODS[method or "lora"].settings_cls
        if rest not in cls.model_fields:
            cls = next((m.settings_cls for m in METHODS.values() if rest in m.settings_cls.model_fields), None)
        return (cls, rest) if cls is not None else None
    if head in SECTIONS and rest in SECTIONS[head].model_fields:
        return SECTIONS[head], rest
    return None


def method_field_groups() -> dict[frozenset, list[str]]:
    """Method fields (but name and targets) grouped by the set of methods that have them, in table order:
    the fields every method shares, then LoRA+QLoRA's, QLoRA's own, AdaLoRA's own..."""
    groups: dict[frozenset, list[str]] = {}
    for m in METHODS.values():
        for name in m.settings_cls.model_fields:
            if name in ("name", "targets") or any(name in fields for fields in groups.values()):
                continue
            owners = frozenset(k for k, other in METHODS.items() if name in other.settings_cls.model_fields)
            groups.setdefault(owners, []).append(name)
    return groups


@dataclass
class TrainForm:
    """The widgets of one rendered Train tab, keyed by the dotted spec field each one fills."""

    fields: dict[str, Any] = field(default_factory=dict)
    card: Any = None

    def add(self, path: str, component):
        """Register a widget under its spec field; its elem_id (for browser tests) follows the field."""
        self.fields[path] = component
        component.elem_id = component.elem_id or "spec-" + path.replace(".", "-")
        return component

    def values(self, data: dict) -> dict[str, Any]:
        """Gradio passes {component: value}; key the values by spec path."""
        return {path: data[c] for path, c in self.fields.items() if c in data}

    @property
    def inputs(self) -> set:
        return {*self.fields.values(), self.card}


# -- form -> spec ---------------------------------------------------------------------------------
def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _clean(path: str, value: Any, method: str) -> Any:
    if path == "method.targets.custom":
        return [s.strip() for s in (value or "").split(",") if s.strip()]
    if path == "name":
        return (value or "").strip() or None
    if path == "data.dataset_id" and isinstance(value, float) and value.is_integer():
        return int(value)
    owner = field_owner(path, method)
    if owner is None:
        return value
    if spec_widgets.none_if_zero(*owner) and not value:
        return None
    if isinstance(value, float) and value.is_integer() and spec_widgets.is_int(*owner):
        return int(value)
    return value


def spec_from_form(values: dict[str, Any]):
    """(RunSpec | None, problems). Only the fields the chosen method knows are passed to it."""
    method = values.get("method.name") or "lora"
    known = set(METHODS[method].settings_cls.model_fields)
    tree: dict[str, Any] = {}
    for path, value in values.items():
        parts = path.split(".")
        if parts[0] == "method" and parts[1] not in known:
            continue
        _set(tree, path, _clean(path, value, method))
    return parse_spec(tree)


def method_widget_values(method: str, preset: str) -> dict[str, Any]:
    """Dotted path -> value of a preset, for the method widgets."""
    settings = METHODS[method].presets[preset].model_dump()
    out = {f"method.{k}": v for k, v in settings.items() if k not in ("name", "targets")}
    out["method.targets.mode"] = settings["targets"]["mode"]
    out["method.targets.custom"] = ", ".join(settings["targets"]["custom"])
    return {k: 0 if v is None else v for k, v in out.items()}  # numeric "not set" shows as 0


def explain_markdown(method: str, spec: RunSpec | None = None, lang: str = "en") -> str:
    """The method's card; with a spec, its trainable parameters and memory on the spec's model."""
    from studio.method_guide import card_markdown

    return card_markdown(method, config_or_none(spec.model, spec.trust_remote_code) if spec else None, lang, spec)


def methods_table(spec: RunSpec | None, lang: str = "en") -> str:
    from studio.method_guide import comparison_markdown

    config = config_or_none(spec.model, spec.trust_remote_code) if spec else None
    return comparison_markdown(spec, config, lang) if config else ""


@functools.lru_cache(maxsize=16)
def config_or_none(model_ref: str, trust_remote_code: bool = False) -> dict | None:
    """config.json of the model (cached: every settings change redraws the cards), or None if unreadable."""
    from studio.planning import model_config

    try:
        return model_config(model_ref, trust_remote_code)
    except Exception:  # noqa: BLE001 - the memory view reports why; the cards then carry no numbers
        return None


ADVISOR_COLUMNS = {"en": ["#", "Method", "Preset", "Memory", "Trainable", "Why"],
                   "zh": ["#", "方法", "预设", "显存", "可训练参数", "原因"]}


def advise_view(db: Database, spec: RunSpec | None, card_name: str, device: str,
                lang: str = "en") -> tuple[str, list[tuple[str, str]]]:
    """(markdown table of the ranked methods, radio choices ``method:preset``) for the form's run."""
    from studio.method_advisor import advise
    from studio.method_guide import gib, label, millions
    from studio.planning import cpu_capacity_bytes

    if spec is None:
        return "Fix the settings first.", []
    config = config_or_none(spec.model, spec.trust_remote_code)
    if config is None:
        return f"No config.json for {spec.model}: cannot advise.", []
    capacity = cpu_capacity_bytes() if device == "this_cpu" else \
        (est.find_card(card_name or DEFAULT_CARD) or est.find_card(DEFAULT_CARD)).capacity_bytes
    rows, stats = None, dataset_statistics(db, spec)
    if spec.data.dataset_id:
        try:
            rows = datasets.get_dataset(db, spec.data.dataset_id).num_train or None
        except LookupError:
            rows = None
    mean_tokens = (stats or {}).get("mean_tokens")
    ranked = advise(spec, config, capacity, rows, mean_tokens, vision=bool(config.get("vision_config")))
    if not ranked:
        return "No method fits this device with these settings: lower the cut-off or the batch size.", []
    head = ADVISOR_COLUMNS["zh" if lang == "zh" else "en"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, a in enumerate(ranked[:8], 1):
        lines.append(f"| {i} | {label(METHODS[a.method], lang)} | {a.preset} | {gib(a.peak_bytes, lang)} ({a.fits}) | "
                     f"{millions(a.trainable)} | {'; '.join(a.reasons)} |")
    picks = [(f"{i}. {label(METHODS[a.method], lang)} ({a.preset})", a.key) for i, a in enumerate(ranked[:5], 1)]
    return "\n".join(lines), picks


def language(request: gr.Request | None) -> str:
    return "zh" if wants_chinese(request) else "en"


# -- memory ---------------------------------------------------------------------------------------
def memory_view(db: Database, spec: RunSpec | None, card_name: str) -> tuple[str, str, MemoryPlan | None]:
    if spec is None:
        return "", "", None
    card = est.find_card(card_name or DEFAULT_CARD) or est.find_card(DEFAULT_CARD)
    images = dataset_images_per_sample(db, spec)
    plan = plan_memory(spec, card.capacity_bytes, images, data=dataset_statistics(db, spec))
    if plan.estimate is None:
        return "", f"No estimate for this model: {plan.error}", plan
    e = plan.estimate
    bar = memory_bar_html(e.parts, e.total_bytes, card.capacity_bytes, card.name, plan.verdict)
    lines = []
    if e.data_rows:
        cut = f"{e.rows_cut}{'' if e.rows_cut_exact else ' (about)'} of {e.data_rows} rows"
        lines.append(f"**For your data:** {e.total_bytes / est.GIB:.1f} GiB (its longest batch) · **worst case at "
                     f"the cut-off:** {e.worst_case_bytes / est.GIB:.1f} GiB · {cut} are longer than the cut-off "
                     "and will be cut")
    else:
        lines.append("Estimated at the cut-off for every row (the dataset's token statistics are not computed yet: "
                     "open it in the Datasets tab)" if spec.data.dataset_id else "Estimated at the cut-off")
    if e.band is not None:
        lines.append(f"Expected error {e.band.text()}; the verdict uses the upper edge.")
    if plan.checkpointing is not None:
        lines.append(f"Gradient checkpointing ({plan.checkpointing.requested}): {plan.checkpointing.reason}")
    cpu = cpu_plan_text(spec, images)
    if cpu:
        lines.append(cpu)
    fixes = "\n".join(f"- **{s.change}** → {s.estimate.total_bytes / est.GIB:.1f} GiB ({s.verdict})"
                      for s in plan.suggestions[:5])
    advice = "\n\n".join(lines) + (f"\n\nTo make it fit on the {card.name}:\n{fixes}" if fixes else "")
    return bar, advice, plan


def dataset_statistics(db: Database, spec: RunSpec) -> dict | None:
    """The chosen dataset's newest token statistics, or None (not computed yet, or a file path)."""
    from studio.estimate.data import stored_statistics

    if not spec.data.dataset_id:
        return None
    try:
        return stored_statistics(db, spec.data.dataset_id)
    except LookupError:
        return None


def model_summary(model_ref: str) -> tuple[str, bool]:
    """One line about the model, and whether it is a vision-language model."""
    from studio.planning import model_config
    from studio.estimate.arch import ModelArch

    if not model_ref:
        return "", False
    try:
        config = model_config(model_ref)
    except Exception as e:  # noqa: BLE001 - shown to the user as is
        return f"⚠️ {e}", False
    arch = ModelArch.from_config(config)
    vision = "vision_config" in config
    kind = "Vision-language model" if vision else "Text model"
    test = " · **test model with random weights: its answers are gibberish**" if "test model" in model_label(model_ref) else ""
    return (f"{kind} · {arch.text_params / 1e6:,.0f} M text parameters · {arch.layers} layers · "
            f"hidden {arch.hidden}{test}"), vision


def model_label(ref: str) -> str:
    for label, value in model_choices():
        if value == ref:
            return label
    return ref


def model_choices() -> list[tuple[str, str]]:
    from studio.models import registry

    builtin = [(m.display_name, m.ref) for m in registry.list_builtin()]
    popular = [(name, name) for name in POPULAR_HUB_MODELS]
    return builtin + popular


POPULAR_HUB_MODELS = ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
                      "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct", "meta-llama/Llama-3.2-1B-Instruct",
                      "meta-llama/Llama-3.1-8B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct"]


def start(db: Database, spec_values: dict[str, Any], card: str, confirmed: bool):
    """(message, show 'start anyway', run id or None)."""
    from studio.training import service as training

    spec, problems = spec_from_form(spec_values)
    if spec is None:
        return "**Not started.** Fix these settings:\n" + "\n".join(f"- {p}" for p in problems), False, None
    if not confirmed:
        _, _, plan = memory_view(db, spec, card)
        if plan is not None and plan.verdict == "does not fit":
            return (f"**The estimate says this run does not fit on the {card}.** Apply a suggestion, or start "
                    "anyway if your GPU is larger or you know better.", True, None)
    try:
        run_id = training.start_run(db, spec, local_paths=False)  # a browser may not name server paths
    except training.SpecError as e:
        return "**Not started.**\n" + "\n".join(f"- {p}" for p in e.problems), False, None
    return f"**Run #{run_id} queued.** Follow it in the Runs tab.", False, run_id


def dataset_choices(db: Database) -> list[tuple[str, int]]:
    def kind(d):
        k = datasets.dataset_kind(d)
        return "" if k == "sft" else f", {k}"

    return [(f"#{d.id} {d.name} ({d.num_rows} rows{', images' if d.has_images else ''}{kind(d)})", d.id)
            for d in datasets.list_datasets(db)]


def adapter_choices(db: Database) -> list[tuple[str, str]]:
    """Adapters a dpo/kto stage can continue: ("#3 sft lora on smollm2 (builtin:...)", "adapter:3")."""
    from studio.training import history

    return [("—", "")] + [(f"{a['label']} · {a['base']}", f"adapter:{a['id']}") for a in history.adapters(db)
                          if a["stage"] != "reward"]  # a reward model scores answers: no policy to continue


def write_spec_file(db: Database, yaml_text: str) -> str | None:
    if not yaml_text:
        return None
    path = db.workspace.tmp_dir / f"spec-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    return str(path)


# -- layout ---------------------------------------------------------------------------------------
def _method_controls(form: TrainForm) -> dict[frozenset, Any]:
    """One group per set of methods sharing fields, shown while the chosen method is in the set."""
    lora = METHODS["lora"].preset()
    form.add("method.targets.mode", gr.Radio(label=t("tr.targets"), choices=[(t("v.attention"), "attention"),
                                             (t("v.all_linear"), "all-linear"), (t("v.custom"), "custom")],
                                             value=lora.targets.mode))
    form.add("method.targets.custom", gr.Textbox(label=t("tr.custom"), placeholder="q_proj, v_proj"))
    groups = {}
    for owners, names in method_field_groups().items():
        first = next(m for m in METHODS.values() if m.name in owners)
        defaults = first.preset()
        with gr.Group(visible="lora" in owners) as groups[owners]:
            with gr.Row():
                for name in names:
                    label = t(METHOD_LABELS[name]) if name in METHOD_LABELS else name
                    form.add(f"method.{name}", spec_widgets.widget(first.settings_cls, name, label,
                                                                   value=getattr(defaults, name)))
    return groups


def _train_controls(form: TrainForm) -> None:
    d = RunSpec.model_fields["train"].default_factory()
    for row in TRAIN_ROWS:
        with gr.Row():
            for name in row:
                value, extra = getattr(d, name), {}
                if name == "learning_rate":  # the sensible range the static checks hold runs to
                    value, extra = METHODS["lora"].default_learning_rate, {"minimum": LR_MIN, "maximum": LR_MAX}
                form.add(f"train.{name}", spec_widgets.widget(TrainSettings, name, t(TRAIN_LABELS[name]),
                                                              value=value, **extra))
    with gr.Row():
        form.add("data.eval_fraction", spec_widgets.widget(DataSpec, "eval_fraction", t("tr.eval")))


def _stage_controls(form: TrainForm, db: Database | None = None) -> dict[str, Any]:
    """The stage radio, and its settings: shown only for the stages that use them."""
    form.add("stage.name", spec_widgets.widget(StageSettings, "name", t("tr.stage"), elem_id="train-stage"))
    boxes = {}
    with gr.Row():
        for name in ("beta", "loss_type", "label_smoothing", "desirable_weight", "undesirable_weight"):
            with gr.Column(visible=False, min_width=160) as boxes[name]:
                form.add(f"stage.{name}", spec_widgets.widget(StageSettings, name, t(STAGE_LABELS[name])))
    with gr.Column(visible=False) as boxes["start_from"]:
        info = spec_widgets.help_text(StageSettings.model_fields["start_from"])
        form.add("stage.start_from", gr.Dropdown(label=t("tr.start_from"), info=info, value="",
                                                 choices=adapter_choices(db) if db is not None else [("—", "")]))
    return boxes


def stage_visibility(stage: str, boxes: dict[str, Any]) -> list[Any]:
    return [gr.update(visible=name in STAGE_FIELDS.get(stage, ())) for name in boxes]


def _vision_controls(form: TrainForm) -> gr.Accordion:
    with gr.Accordion(t("tr.vision"), open=True, visible=False) as box:
        with gr.Row():
            form.add("vision.min_pixels", spec_widgets.widget(VisionSettings, "min_pixels", t("tr.min_pixels")))
            form.add("vision.max_pixels", spec_widgets.widget(VisionSettings, "max_pixels", t("tr.max_pixels")))
        with gr.Row():
            form.add("vision.vision_tower", spec_widgets.widget(VisionSettings, "vision_tower", t("tr.tower")))
            form.add("vision.projector", spec_widgets.widget(VisionSettings, "projector", t("tr.projector")))
    return box


def render(db: Database, tabs: gr.Tabs | None = None) -> dict:
    form = TrainForm()
    gr.Markdown(t("tr.intro"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            choices = model_choices()
            with gr.Row():
                form.add("model", gr.Dropdown(label=t("tr.model"), choices=choices, value=choices[0][1],
                                              allow_custom_value=True, scale=3, elem_id="train-model"))
                form.add("data.dataset_id", gr.Dropdown(label=t("tr.dataset"), scale=2, elem_id="train-dataset",
                                                        choices=dataset_choices(db)))
            model_info = gr.Markdown(model_summary(choices[0][1])[0])
            form.add("trust_remote_code", gr.Checkbox(label=t("tr.trust"), value=False))
            form.add("name", gr.Textbox(label=t("tr.name"), max_length=200))
            with gr.Row():
                form.add("method.name", gr.Radio(label=t("tr.method"), value="lora", elem_id="train-method",
                                                 choices=[(m.label, m.name) for m in METHODS.values()]))
                form.add("method.preset", gr.Dropdown(label=t("tr.preset"),
                                                      choices=translated_choices(list(METHODS["lora"].presets)),
                                                      value=METHODS["lora"].default_preset))
                form.add("train.epochs", spec_widgets.widget(TrainSettings, "epochs", t("tr.epochs")))
            explanation = gr.Markdown(explain_markdown("lora"), elem_id="train-method-card")
            with gr.Accordion(t("tr.compare_methods"), open=False):
                comparison = gr.Markdown(elem_id="train-method-table")
            compare = train_compare.render()
            with gr.Accordion(t("tr.advisor"), open=False, elem_id="train-advisor"):
                with gr.Row():
                    advise_device = gr.Radio(label=t("tr.advise_on"), value="gpu_card",
                                             choices=[(t("v.gpu_card"), "gpu_card"), (t("v.this_cpu"), "this_cpu")])
                    advise_btn = gr.Button(t("tr.advise"), scale=0)
                advice_table = gr.Markdown(elem_id="train-advice")
                with gr.Row():
                    advice_pick = gr.Radio(label=t("tr.advice_pick"), choices=[], elem_id="train-advice-pick")
                    apply_btn = gr.Button(t("tr.apply_advice"), scale=0, elem_id="train-apply-advice")
            with gr.Accordion(t("tr.stage"), open=False, elem_id="train-stage-box"):
                gr.Markdown(t("tr.stage_intro"))
                stage_boxes = _stage_controls(form, db)
            # A first run needs only the lines above; everything else has a sensible default
            with gr.Accordion(t("tr.advanced"), open=False, elem_id="train-advanced"):
                groups = _method_controls(form)
                gr.Markdown(f"**{t('tr.hyper')}**")
                _train_controls(form)
            vision_box = _vision_controls(form)
        with gr.Column(scale=2):
            gr.Markdown(f"### {t('tr.memory')}")
            form.card = gr.Dropdown(label=t("tr.card"), choices=CARD_CHOICES, value=DEFAULT_CARD)
            memory = gr.HTML(elem_id="train-memory")
            advice = gr.Markdown()
            problems = gr.Markdown()
            with gr.Row():
                start_btn = gr.Button(t("tr.start"), variant="primary", elem_id="train-start")
                anyway_btn = gr.Button(t("tr.start_anyway"), variant="stop", visible=False)
            start_msg = gr.Markdown(elem_id="train-start-message")
            with gr.Accordion(t("tr.spec"), open=False):
                spec_yaml = gr.Code(language="yaml", interactive=False, lines=16)
                spec_file = gr.DownloadButton(t("tr.download_spec"), value=None)

    def _refresh(data, request: gr.Request = None):
        spec, probs = spec_from_form(form.values(data))
        bar, tips, _ = memory_view(db, spec, data.get(form.card))
        msg = "" if spec else "**Fix these settings:**\n" + "\n".join(f"- {p}" for p in probs)
        method = data.get(form.fields["method.name"]) or "lora"
        lang = language(request)
        return ((spec.to_yaml() if spec else ""), bar, tips, msg, explain_markdown(method, spec, lang),
                methods_table(spec, lang))

    outputs = [spec_yaml, memory, advice, problems, explanation, comparison]
    for component in form.inputs:
        trigger = component.release if isinstance(component, gr.Slider) else component.change
        trigger(_refresh, inputs=form.inputs, outputs=outputs, show_progress="hidden", api_visibility="private")

    method_paths = [p for p in form.fields if p.startswith("method.") and p not in ("method.name", "method.preset")]

    def _preset(method, preset):
        values = method_widget_values(method, preset)
        return [gr.update(value=values[p]) if p in values else gr.update() for p in method_paths]

    def _method(method, preset):
        m = METHODS[method]
        # the card (with this model's numbers) follows through _refresh, which every field change triggers;
        # a preset set together with the method (the advisor's choice) is kept
        return (gr.update(choices=translated_choices(list(m.presets)),
                          value=preset if preset in m.presets else m.default_preset),
                *[gr.update(visible=method in owners) for owners in groups], gr.update(value=m.default_learning_rate))

    form.fields["method.name"].change(
        _method, inputs=[form.fields["method.name"], form.fields["method.preset"]],
        outputs=[form.fields["method.preset"], *groups.values(), form.fields["train.learning_rate"]],
        api_name="choose_method")
    form.fields["method.preset"].change(_preset, inputs=[form.fields["method.name"], form.fields["method.preset"]],
                                        outputs=[form.fields[p] for p in method_paths], api_visibility="private")

    def _advise(data, request: gr.Request = None):
        spec, _ = spec_from_form(form.values(data))
        table, picks = advise_view(db, spec, data.get(form.card), data.get(advise_device), language(request))
        return table, gr.update(choices=picks, value=picks[0][1] if picks else None)

    advise_btn.click(_advise, inputs={*form.inputs, advise_device}, outputs=[advice_table, advice_pick],
                     api_name="advise_methods")

    def _apply(key):
        if not key:
            return gr.update(), gr.update()
        method, preset = key.split(":", 1)
        return gr.update(value=method), gr.update(choices=translated_choices(list(METHODS[method].presets)), value=preset)

    apply_btn.click(_apply, inputs=advice_pick, outputs=[form.fields["method.name"], form.fields["method.preset"]],
                    api_name="apply_advice")

    form.fields["stage.name"].change(lambda stage: stage_visibility(stage, stage_boxes),
                                     inputs=form.fields["stage.name"], outputs=list(stage_boxes.values()),
                                     api_visibility="private")

    def _model(ref):
        text, vision = model_summary(ref)
        return text, gr.update(visible=vision)

    form.fields["model"].change(_model, inputs=form.fields["model"], outputs=[model_info, vision_box],
                                api_name="choose_model")

    def _start(data, confirmed=False):
        msg, ask, run_id = start(db, form.values(data), data.get(form.card), confirmed)
        go = gr.update(selected="runs") if run_id and tabs is not None else gr.update()
        return msg, gr.update(visible=ask), go

    tab_output = [tabs] if tabs is not None else []
    start_btn.click(lambda data: _start(data)[: 2 + len(tab_output)], inputs=form.inputs,
                    outputs=[start_msg, anyway_btn, *tab_output], api_name="start_training")
    anyway_btn.click(lambda data: _start(data, True)[: 2 + len(tab_output)], inputs=form.inputs,
                     outputs=[start_msg, anyway_btn, *tab_output], api_name="start_training_anyway")
    spec_yaml.change(lambda y: write_spec_file(db, y), inputs=spec_yaml, outputs=spec_file, api_visibility="private")
    compare = train_compare.connect(db, compare, form, tabs)
    return {"form": form, "dataset": form.fields["data.dataset_id"], "refresh_outputs": outputs,
            "refresh": _refresh, "compare": compare}
