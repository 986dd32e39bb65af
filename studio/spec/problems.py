"""A problem with a run spec, and the error that carries every problem at once. Imports nothing."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run spec: where (a dotted field path), what, and how to fix it."""

    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "hint": self.hint}


class SpecError(ValueError):
    """A spec was refused; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the run spec has {len(self.problems)} problem(s):\n{lines}")
