"""Checks on the parsed values of one row, before any converter sees them.

Readers hand over whatever the file holds; a hostile file can hold values that crash or bloat
what comes after (``json.dumps`` of a value nested 900 deep, ``str()`` of a 20,000-digit number,
a NUL byte in a path, a lone UTF-16 surrogate that cannot be written as UTF-8, a megabyte in one
text field). The walk is iterative, so depth itself cannot crash it, and stops descending at the
limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from studio.datasets import problems as P
from studio.datasets.options import RowLimits
from studio.datasets.problems import RowProblems

# Python refuses int(str) beyond 4300 digits (a ValueError, not a JSON error); the JSON readers
# keep anything longer than this as a ``BigNumber`` so it is reported, not raised.
PARSE_DIGITS_CAP = 4000


@dataclass(frozen=True)
class BigNumber:
    """A JSON integer too long to convert: only its digit count is kept."""

    digits: int


def parse_int(text: str) -> int | BigNumber:
    """``json.loads(parse_int=...)``: never raises on long integers."""
    digits = len(text.lstrip("-"))
    return BigNumber(digits) if digits > PARSE_DIGITS_CAP else int(text)


def walk(value: Any, max_depth: int) -> Iterator[tuple[str, Any, int]]:
    """``(field path, value, depth)`` in document order; containers deeper than ``max_depth``
    are yielded but not entered. Paths read like ``messages[0].content``."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        yield path, item, depth
        if depth >= max_depth:
            continue
        if isinstance(item, dict):
            children = [(f"{path}.{k}" if path else str(k), v, depth + 1) for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            children = [(f"{path}[{i}]", v, depth + 1) for i, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))


def check_row(data: dict[str, Any], limits: RowLimits, probs: RowProblems) -> None:
    """Record every value of ``data`` that breaks a limit or cannot be stored as UTF-8 text."""
    for path, value, depth in walk(data, limits.max_depth):
        where = path or None
        if isinstance(value, str):
            _check_text(value, where, limits, probs)
        elif isinstance(value, BigNumber) or (isinstance(value, int) and _too_many_digits(value, limits)):
            digits = value.digits if isinstance(value, BigNumber) else len(str(abs(value)))
            probs.add(where, P.NUMBER_TOO_LARGE, f"number has {digits:,} digits (limit {limits.max_number_digits})",
                      "write such values as text (in quotes), or remove them")
        elif isinstance(value, (dict, list, tuple)) and value and depth >= limits.max_depth:
            probs.add(where, P.TOO_DEEP, f"value is nested more than {limits.max_depth} levels deep",
                      "flatten the structure; chat rows need only a few levels")
            return  # one such problem per row is enough, and the rest may be just as deep


def _too_many_digits(value: int, limits: RowLimits) -> bool:
    # bit_length first: str() of a large int is quadratic
    return value.bit_length() > 3.33 * limits.max_number_digits - 4 and len(str(abs(value))) > limits.max_number_digits


def _check_text(text: str, where: str | None, limits: RowLimits, probs: RowProblems) -> None:
    if "\0" in text:
        probs.add(where, P.NUL_BYTE, f"text contains a NUL byte (at character {text.index(chr(0)) + 1})",
                  "remove the NUL (\\u0000) characters; they are not text and break file paths")
    lone = next((ch for ch in text if "\ud800" <= ch <= "\udfff"), None) if _may_have_surrogate(text) else None
    if lone is not None:
        probs.add(where, P.ENCODING, f"text holds a lone UTF-16 surrogate \\u{ord(lone):04x} (half of a character)",
                  "fix the \\u escape: a character beyond U+FFFF needs both halves (e.g. \\ud83d\\ude00)")
    if len(text) * 4 > limits.max_text_bytes:  # only then can it exceed the limit in UTF-8
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > limits.max_text_bytes:
            probs.add(where, P.TEXT_TOO_LONG, f"text is {size:,} bytes (limit {limits.max_text_bytes:,} per field)",
                      "split it into shorter rows, or raise the text-field limit of the import")


def _may_have_surrogate(text: str) -> bool:
    """Cheap pre-test: surrogates cannot be encoded strictly."""
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True
