"""PEFT methods, one module each, registered in one table.

    METHODS["lora"].presets, .explain, .validate(spec, total_steps), .build_peft_config(...)

Adding a method: write ``studio/methods/<name>.py`` with the same shape as ``lora.py`` (a
``Settings`` model whose ``name`` field is a ``Literal`` of the method's name, ``PRESETS``,
``EXPLAIN``, ``validate``, ``build_peft_config``, the hooks it needs and ``METHOD``) and add it
below. Building a ``Method`` registers it with the run spec; the Train tab's controls, the
estimator, the trainer, the worker's pre-flight, the export card and the tests read this table.
"""
from __future__ import annotations

from studio.methods import (adalora, bitfit, boft, freeze, full, ia3, lokr, loha, longlora, lora, oft, p_tuning,
                            prefix_tuning, prompt_tuning, qlora, vera)
from studio.methods.base import Explain, Method, MethodSettings, ModelFacts, Problem, Targets

# The order is the Train tab's: the usual choices first, then the families as the field teaches them
# (reparameterisation, additive, selective), full fine-tuning last as the baseline.
METHODS: dict[str, Method] = {m.name: m for m in (
    lora.METHOD, qlora.METHOD, adalora.METHOD, vera.METHOD, loha.METHOD, lokr.METHOD, oft.METHOD, boft.METHOD,
    longlora.METHOD,
    ia3.METHOD, prompt_tuning.METHOD, prefix_tuning.METHOD, p_tuning.METHOD,
    bitfit.METHOD, freeze.METHOD, full.METHOD)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "get_method", "Method", "MethodSettings", "Explain", "Problem", "ModelFacts", "Targets"]
