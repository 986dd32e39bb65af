"""The run spec: typed, torch-free, the bottom of the domain (see ``run.py``).

    from studio.spec import RunSpec, parse_spec, static_problems, Problem, SpecError
"""
from studio.spec.problems import Problem, SpecError
from studio.spec.registry import MethodSettings, method_entry, method_names, register_method
from studio.spec.run import (LR_MAX, LR_MIN, DataSpec, Precision, RunSpec, Scheduler, TrainSettings, VisionSettings,
                             parse_spec, plan_total_steps, problems_of_validation_error)
from studio.spec.stages import StageSettings

__all__ = ["Problem", "SpecError", "MethodSettings", "method_entry", "method_names", "register_method", "LR_MAX",
           "LR_MIN", "DataSpec", "Precision", "RunSpec", "Scheduler", "TrainSettings", "VisionSettings", "parse_spec",
           "plan_total_steps", "problems_of_validation_error", "StageSettings"]
