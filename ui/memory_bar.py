"""The memory estimate as a picture: one stacked bar of the breakdown with the card's capacity marked."""
from __future__ import annotations

import html

PART_COLORS = {
    "base_weights": "#6366f1", "adapter_weights": "#22c55e", "gradients": "#f59e0b", "optimizer_states": "#ef4444",
    "activations": "#06b6d4", "logits": "#a855f7", "vision": "#ec4899", "dequant_workspace": "#84cc16",
    "cuda_context": "#94a3b8", "allocator_fragmentation": "#cbd5e1",
}
VERDICT_COLORS = {"fits": "#16a34a", "tight": "#d97706", "does not fit": "#dc2626", "unknown": "#64748b"}
GIB = 1024**3


def _label(part: str) -> str:
    return part.replace("_", " ")


def memory_bar_html(parts: dict[str, int], total: int, capacity: int, card: str, verdict: str) -> str:
    scale = max(total, capacity) * 1.08 or 1
    segments = "".join(
        f'<div title="{html.escape(_label(k))}: {v / GIB:.2f} GiB" style="width:{100 * v / scale:.3f}%;'
        f'background:{PART_COLORS.get(k, "#64748b")}"></div>'
        for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0)
    marker = 100 * capacity / scale
    legend = "".join(
        f'<span class="mem-key"><i style="background:{PART_COLORS.get(k, "#64748b")}"></i>{html.escape(_label(k))} '
        f"{v / GIB:.2f} GiB</span>" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0)
    color = VERDICT_COLORS.get(verdict, "#64748b")
    return f"""
<div class="mem-plan">
  <div class="mem-head"><span class="mem-verdict" style="background:{color}">{html.escape(verdict)}</span>
    <b>{total / GIB:.1f} GiB</b> estimated peak &nbsp;·&nbsp; {html.escape(card)}: {capacity / GIB:.1f} GiB</div>
  <div class="mem-track">{segments}
    <div class="mem-cap" style="left:{marker:.3f}%"><span>{html.escape(card)}</span></div></div>
  <div class="mem-legend">{legend}</div>
</div>"""


CSS = """
.mem-plan { font-size: 14px; }
.mem-head { margin-bottom: 8px; }
.mem-verdict { color: white; border-radius: 6px; padding: 2px 8px; margin-right: 8px; font-weight: 600; }
.mem-track { position: relative; display: flex; height: 28px; border-radius: 6px; background: #f1f5f9;
             margin: 22px 0 8px 0; }
.mem-track > div:not(.mem-cap) { height: 100%; }
.mem-track > div:first-child { border-radius: 6px 0 0 6px; }
.mem-cap { position: absolute; top: -18px; bottom: -4px; border-left: 2px dashed #0f172a; }
.mem-cap span { position: absolute; top: -2px; right: 4px; font-size: 11px; white-space: nowrap; }
.mem-legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; }
.mem-key i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
"""
