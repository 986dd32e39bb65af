"""Gradio controls generated from the spec's pydantic fields: the field is the one source of truth.

    widget(TrainSettings, "cutoff_len", label=t("tr.cutoff"))   # bounds from ge/le, help from description

- ``bool`` -> checkbox; ``Literal`` -> radio (up to four choices) or dropdown;
- ``int``/``float`` with both bounds -> slider over them; otherwise a number box with the bounds it has;
- a numeric field that may be ``None`` (``max_steps``, ``tinit``...) shows 0 for "not set"
  (``none_if_zero``), and ``int`` fields come back as ints (``is_int``);
- the field's ``description`` becomes the help text, in Chinese where ``DESCRIPTIONS_ZH`` has it.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Literal

import annotated_types
import gradio as gr
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ui.i18n import EN, add, t
from ui.i18n import choices as translated_choices

SLIDER_MAX_SPAN = 100_000  # wider ranges (cutoff up to 1M tokens, rank up to 1024) still slide; beyond: a box

# Chinese help texts for the spec's field descriptions (the English text is the key)
DESCRIPTIONS_ZH = {
    "stop after this many optimizer steps (overrides epochs)": "训练到这么多优化步后停止（优先于轮数）",
    "None: the method's recommended rate": "留空：使用该方法推荐的学习率",
    "rows per device per forward pass": "每个设备每次前向的行数",
    "forward passes per optimizer step": "每个优化步的前向次数",
    "longest tokenised row; longer rows are cut": "分词后最长的一行；更长的行会被截断",
    "complete checkpoints kept for resuming": "为续训保留的完整检查点数",
    "training processes (GPUs); >1 launches torchrun": "训练进程数（GPU 数）；大于 1 时用 torchrun 启动",
    "if the run runs out of memory, retry it once with the memory estimator's next fix (gradient checkpointing on, "
    "or a smaller batch with more accumulation: the effective batch is kept)":
        "训练内存不足时，用显存估算器给出的下一个修复方案自动重试一次（开启梯度检查点，或减小批大小并增加梯度累积：有效批大小不变）",
    "evaluate every N steps (None: only at the end)": "每 N 步评估一次（留空：仅在结束时）",
    "share of training rows held out for eval loss when the dataset has no validation split":
        "数据集没有验证集时，留出用于评估损失的训练行比例",
    "starting rank of every adapted layer": "每个适配层的初始秩",
    "average rank after pruning": "剪枝后的平均秩",
    "scaling numerator (divided by the current rank)": "缩放分子（除以当前秩）",
    "warm-up steps before pruning starts (None: 10% of the run)": "开始剪枝前的预热步数（留空：训练的 10%）",
    "final steps with fixed ranks (None: 20% of the run)": "最后固定秩的步数（留空：训练的 20%）",
    "steps between two budget allocations": "两次预算分配之间的步数",
    "EMA factor of the sensitivity": "敏感度的指数滑动平均系数",
    "EMA factor of the uncertainty": "不确定性的指数滑动平均系数",
    "weight of the orthogonality regulariser": "正交正则项的权重",
    "4: NF4/FP4 weights (smallest); 8: LLM.int8 weights": "4：NF4/FP4 权重（最小）；8：LLM.int8 权重",
    "4-bit data type; NF4 is the QLoRA paper's": "4 位数据类型；NF4 是 QLoRA 论文所用",
    "also quantize the quantization constants (~0.4 bit/param saved)": "对量化常数再量化（每参数约省 0.4 位）",
    "dtype the de-quantized weights are multiplied in; auto follows the run's precision":
        "反量化权重参与乘法的精度；auto 跟随训练精度",
    "how the adapter starts: default (B = 0, the update starts at zero); pissa (the weight's principal singular "
    "directions, Meng et al. 2024: converges faster); olora (an orthonormal QR basis of the weight, Buyukakyuz "
    "2024); loftq (QLoRA 4-bit only: the adapter starts as the low-rank part of the quantisation error, Li et al. "
    "2023; needs a CUDA GPU)":
        "适配器的初始值：default（B = 0，更新从零开始）；pissa（权重的主奇异方向，Meng 等 2024：收敛更快）；olora（权重的"
        "正交 QR 基，Buyukakyuz 2024）；loftq（仅限 4 位 QLoRA：适配器从量化误差的低秩部分开始，Li 等 2023；需要 CUDA GPU）",
    "size of each orthogonal block; block_size x 2^(factor-1) must divide the input size of every adapted layer":
        "每个正交块的大小；block_size × 2^(factor-1) 必须整除每个适配层的输入维度",
    "number of butterfly factors: 1 is OFT; each further factor doubles the span of a rotation block":
        "蝶形因子的个数：1 即 OFT；每多一个因子，旋转块的覆盖范围翻倍",
    "multiplicative dropout: blocks randomly set to identity": "乘性 dropout：随机把一些块设为单位矩阵",
    "DoRA: learn a magnitude per output feature as well (slower, often better)":
        "DoRA：同时为每个输出特征学习幅度（更慢，常更好）",
    "rsLoRA: scale by alpha/sqrt(r) so high ranks keep learning": "rsLoRA：按 alpha/sqrt(r) 缩放，高秩也能持续学习",
    "what the run learns: sft (instruction rows), dpo or kto (preferences against a reference), reward (a reward "
    "model)": "训练内容：sft（指令数据）、dpo 或 kto（相对参考模型学习偏好）、reward（奖励模型）",
    "DPO/KTO: how far the policy may move from the reference; higher stays closer":
        "DPO/KTO：策略可偏离参考模型的程度；越大越接近参考模型",
    "DPO loss: sigmoid (the DPO paper), ipo, hinge, robust (noisy labels), and TRL's other pair losses":
        "DPO 损失：sigmoid（DPO 论文）、ipo、hinge、robust（标签有噪声时）以及 TRL 的其他成对损失",
    "DPO robust/sigmoid: the share of pairs whose labels may be flipped": "DPO robust/sigmoid：标签可能颠倒的偏好对比例",
    "KTO: weight of desirable completions": "KTO：好回答的权重",
    "KTO: weight of undesirable completions": "KTO：差回答的权重",
    "DPO/KTO: continue this adapter (adapter:<id>, run:<id> or a folder), usually the SFT adapter; it is also the "
    "reference": "DPO/KTO：继续训练此适配器（adapter:<id>、run:<id> 或文件夹），通常是 SFT 适配器；它同时作为参考模型",
}


def _constraint(info: FieldInfo, kind: type) -> float | None:
    for m in info.metadata:
        if isinstance(m, kind):
            return getattr(m, next(iter(kind.__dataclass_fields__)))
    return None


def _max_length(info: FieldInfo) -> Any:
    return next((m for m in info.metadata if isinstance(m, annotated_types.MaxLen)), None)


def bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    """(lowest, highest) allowed value from ge/gt and le/lt."""
    low = _constraint(info, annotated_types.Ge)
    low = low if low is not None else _constraint(info, annotated_types.Gt)
    high = _constraint(info, annotated_types.Le)
    high = high if high is not None else _constraint(info, annotated_types.Lt)
    return low, high


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), len(rest) < len(args)
    return annotation, False


def is_int(model: type[BaseModel], name: str) -> bool:
    return _base_type(model.model_fields[name].annotation)[0] is int


def none_if_zero(model: type[BaseModel], name: str) -> bool:
    base, optional = _base_type(model.model_fields[name].annotation)
    return optional and base in (int, float)


def help_text(info: FieldInfo) -> Any:
    if not info.description:
        return None
    key = "desc." + info.description
    if key not in EN:
        add(key, info.description, DESCRIPTIONS_ZH.get(info.description, info.description))
    return t(key)


def widget(model: type[BaseModel], name: str, label: Any, value: Any = None, **overrides: Any):
    """The control for ``model.name``: its kind, bounds, default and help all come from the field."""
    info = model.model_fields[name]
    base, optional = _base_type(info.annotation)
    default = info.get_default(call_default_factory=True) if value is None else value
    common = {"label": label, "info": help_text(info), **overrides}
    if base is bool:
        return gr.Checkbox(value=bool(default), **common)
    if base is str:
        return gr.Textbox(value=default or "", lines=2, max_length=getattr(_max_length(info), "max_length", None),
                          **common)
    if typing.get_origin(base) is Literal:
        values = list(typing.get_args(base))
        cls = gr.Radio if len(values) <= 4 else gr.Dropdown
        # shown in the browser's language where a value has a "v.<value>" string (auto, on/off, frozen...)
        return cls(choices=translated_choices(values), value=default, **common)
    if base in (int, float):
        low, high = bounds(info)
        if optional:  # 0 stands for "not set" (None), so the control must allow it
            default, low = (0 if default is None else default), 0
        if base is int:
            common.setdefault("step", 1)
        # sliders for bounded ints and for shares/fractions; a box for the rest (0.5 epochs, 3e-4...)
        slide = low is not None and high is not None and (high - low <= 10 if base is float else
                                                          high - low <= SLIDER_MAX_SPAN)
        if slide:
            step = common.pop("step", None) or 0.01
            return gr.Slider(minimum=low, maximum=high, step=step, value=default, **common)
        common.pop("step", None)
        common.setdefault("minimum", low)
        common.setdefault("maximum", high)
        return gr.Number(value=default, precision=0 if base is int else None, **common)
    raise TypeError(f"no generated control for {model.__name__}.{name} ({info.annotation!r})")
