"""Memory estimator: how much GPU memory a training run needs, from config.json alone.

Pure Python (no torch): ``import studio.estimate`` is fast and safe in the UI process.

    from studio.estimate import EstimateRequest, estimate, lookup_config, suggestions, GPU_CARDS
    req = EstimateRequest(config=lookup_config("qwen2.5-7b"), method="lora", seq_len=2048)
    est = estimate(req)              # est.parts: {name: bytes}, est.total_bytes, est.notes
    verdict(est.total_bytes, find_card("4090").capacity_bytes)   # "fits" | "tight" | "does not fit"
    suggestions(req, find_card("4090").capacity_bytes)           # changes, each with its estimate
    est = estimate_for_data(req, dataset_stats)   # for the data's longest batch; est.worst_case_bytes at the
                                                  # cut-off, est.rows_cut, est.band (expected error)
"""
from studio.estimate.configs import UnknownModel, list_models, load_config, lookup_config, resolve_name
from studio.estimate.calibration import ErrorBand
from studio.estimate.data import TokenLengths
from studio.estimate.estimator import (EstimateError, estimate, estimate_cpu_training, estimate_for_data,
                                       estimate_inference)
from studio.estimate.request import GIB, Estimate, EstimateRequest
from studio.estimate.verdict import (FIT_RATIO, GPU_CARDS, GpuCard, Suggestion, describe, estimate_verdict, find_card,
                                     smallest_card, suggestions, verdict)

__all__ = [
    "EstimateRequest", "Estimate", "EstimateError", "estimate", "estimate_cpu_training", "estimate_inference",
    "estimate_for_data", "estimate_verdict", "TokenLengths", "ErrorBand",
    "lookup_config", "load_config", "list_models", "resolve_name", "UnknownModel",
    "verdict", "suggestions", "describe", "Suggestion", "GPU_CARDS", "GpuCard", "find_card", "smallest_card",
    "FIT_RATIO", "GIB",
]
