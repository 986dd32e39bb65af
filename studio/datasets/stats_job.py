"""Token statistics as a worker job: it needs the model's tokenizer/processor, which the UI
process must not load (transformers pulls in torch)."""
from __future__ import annotations

from jobs.context import JobContext
from studio.datasets import service


def run_stats_job(ctx: JobContext) -> dict:
    from studio.models import registry
    from studio.models.loading import load_tokenizer_or_processor

    p = ctx.payload
    ctx.progress(0.1, f"loading the tokenizer of {p['model_ref']}")
    info = registry.inspect(p["model_ref"])
    path = registry.prepare(p["model_ref"], progress=lambda f, m: ctx.progress(0.1 + 0.4 * f, m))
    processor = load_tokenizer_or_processor(path, info.kind)
    ctx.progress(0.5, "counting tokens")
    stats = service.statistics(ctx.db, int(p["dataset_id"]), processor, split=p.get("split", "train"),
                               cutoff_len=int(p.get("cutoff_len", 2048)), max_pixels=p.get("max_pixels"),
                               min_pixels=p.get("min_pixels"), limit=p.get("limit"))
    return stats.to_dict()
