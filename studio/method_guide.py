"""What each method trains and costs on the chosen model: the Train tab's method card and comparison table.

Numbers come from the model's config.json through the estimator (no weights, no torch): trainable
parameters exactly as peft counts them (tests/estimate/test_method_params.py) and the estimated peak
memory of the run's settings with each method's default preset. Texts in English or Chinese.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio import estimate as est
from studio.methods import METHODS, Method
from studio.methods.texts_zh import EXPLAIN_ZH, FAMILY_ZH, LABELS_ZH
from studio.planning import estimate_request
from studio.spec import RunSpec

REFERENCE = "lora"  # every card compares its parameter count with LoRA's balanced preset (r16, all linear)

TEXT = {
    "en": {"trained": "What is trained", "params": "Parameters trained on this model", "memory": "Memory",
           "speed": "Speed", "when": "When to choose it", "merge": "Merge at export", "lr": "Recommended learning rate",
           "merges": "merges into the model's weights (a plain model, or the adapter alone)",
           "no_merge": "not merged: exported as an adapter that is loaded on the base model",
           "vl_no": "Text models only (not Qwen2.5-VL).", "family": "Family",
           "of_model": "of the model", "reference": "LoRA r16", "estimate": "estimated peak",
           "cols": ["Method", "Family", "Trainable", "% of model", "Peak memory (est.)", "Merges", "Images"],
           "yes": "yes", "no": "no", "unknown": "no estimate"},
    "zh": {"trained": "训练什么", "params": "在此模型上训练的参数", "memory": "显存", "speed": "速度", "when": "何时选择",
           "merge": "导出时合并", "lr": "推荐学习率", "merges": "可合并进模型权重（得到普通模型，或只导出适配器）",
           "no_merge": "不合并：导出为适配器，加载在基础模型上使用", "vl_no": "仅限文本模型（不支持 Qwen2.5-VL）。",
           "family": "类别", "of_model": "占模型", "reference": "LoRA r16", "estimate": "估算峰值",
           "cols": ["方法", "类别", "可训练参数", "占模型 %", "显存峰值（估算）", "可合并", "图像"],
           "yes": "是", "no": "否", "unknown": "无估算"},
}


@dataclass(frozen=True)
class MethodNumbers:
    name: str
    trainable: int | None
    total_params: int | None
    peak_bytes: int | None
    error: str | None = None

    @property
    def percent(self) -> float | None:
        return 100 * self.trainable / self.total_params if self.trainable is not None and self.total_params else None


def spec_with_method(spec: RunSpec, method: Method) -> RunSpec:
    return spec.model_copy(update={"method": method.preset()})


def default_spec(model_ref: str) -> RunSpec:
    return RunSpec(model=model_ref, data={"path": "rows.jsonl"})


def numbers(spec: RunSpec, config: dict[str, Any], method: Method) -> MethodNumbers:
    """Trainable parameters and estimated peak (GPU, bf16) of ``spec`` run with ``method``'s default preset."""
    try:
        e = est.estimate(estimate_request(spec_with_method(spec, method), config))
    except Exception as err:  # noqa: BLE001 - a card without numbers still explains the method
        return MethodNumbers(method.name, None, None, None, f"{type(err).__name__}: {err}")
    return MethodNumbers(method.name, int(e.params["trainable"]), int(e.params.get("total") or 0) or None,
                         int(e.total_bytes))


def millions(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 100_000:
        return f"{n / 1e3:.1f} k"
    return f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


def gib(n: int | None, lang: str) -> str:
    return TEXT[lang]["unknown"] if n is None else f"{n / 2**30:.1f} GiB"


def label(method: Method, lang: str) -> str:
    return LABELS_ZH.get(method.name, method.label) if lang == "zh" else method.label


def card_markdown(method_name: str, config: dict[str, Any] | None, lang: str = "en",
                  spec: RunSpec | None = None) -> str:
    """The method's card: what it trains, its parameters and memory on this model, speed, when, merge."""
    lang = "zh" if lang == "zh" else "en"
    m, s = METHODS[method_name], TEXT[lang]
    e = EXPLAIN_ZH.get(method_name, m.explain) if lang == "zh" else m.explain
    family = FAMILY_ZH.get(m.family, m.family) if lang == "zh" else m.family
    lines = [f"#### {label(m, lang)} · {s['family']}: {family}", f"**{s['trained']}.** {e.summary}"]
    if config is not None and spec is not None:
        mine, ref = numbers(spec, config, m), numbers(spec, config, METHODS[REFERENCE])
        share = f" ({mine.percent:.3g}% {s['of_model']})" if mine.percent is not None else ""
        versus = "" if method_name == REFERENCE else f"; {s['reference']}: {millions(ref.trainable)}"
        lines.append(f"**{s['params']}.** {millions(mine.trainable)}{share}{versus}; "
                     f"{s['estimate']} {gib(mine.peak_bytes, lang)}")
    lines += [f"**{s['memory']}.** {e.memory}", f"**{s['speed']}.** {e.speed}", f"**{s['when']}.** {e.when}",
              f"**{s['merge']}.** {s['merges'] if m.merges else s['no_merge']}"
              + ("" if m.vision else f" {s['vl_no']}"),
              f"*{s['lr']}: {m.default_learning_rate:g}.*"]
    return "\n\n".join(lines)


def comparison_rows(spec: RunSpec, config: dict[str, Any], lang: str = "en") -> list[list[str]]:
    """One row per method of the table: its default preset's numbers on this model with this run's settings."""
    lang = "zh" if lang == "zh" else "en"
    s, rows = TEXT[lang], []
    for m in METHODS.values():
        n = numbers(spec, config, m)
        family = FAMILY_ZH.get(m.family, m.family) if lang == "zh" else m.family
        rows.append([label(m, lang), family, millions(n.trainable),
                     f"{n.percent:.3g}" if n.percent is not None else "?", gib(n.peak_bytes, lang),
                     s["yes"] if m.merges else s["no"], s["yes"] if m.vision else s["no"]])
    return rows


def comparison_markdown(spec: RunSpec, config: dict[str, Any], lang: str = "en") -> str:
    cols = TEXT["zh" if lang == "zh" else "en"]["cols"]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in comparison_rows(spec, config, lang))
