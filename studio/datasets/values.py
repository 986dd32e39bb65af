"""Checks on the parsed values of one row, before any converter sees them.

Readers hand over whatever the file holds; a hostile file can hold values that crash or bloat
what comes after (``json.dumps`` of a value nested 900 deep, ``str()`` of a 20,000-digit number,
a NUL byte in a path, a lone UTF-16 surrogate that cannot be written as UTF-8, a megabyte in one
text field). The walk is iterative, so depth itself cannot crash it, and stops descending at the
limit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from studio.datasets import problems as P
from studio.datasets.options import RowLimits
from studio.datasets.problems import RowProblems

# Python refuses int(str) beyond 4300 digits (a ValueError, not a JSON error), and converting is
# quadratic below that; the JSON readers keep anything longer than this as a ``BigNumber`` so it
# is reported, cheaply, never raised.
PARSE_DIGITS_CAP = 1000


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
    # Paths are built only for problems: (parent path, key) pairs, joined on demand (this runs on
    # every row, so a flat Alpaca row must cost little more than a loop over its fields).
    if all(type(v) is str for v in data.values()):  # flat rows (Alpaca, CSV): the common case
        _check_keys(data, None, None, probs)
        for key, text in data.items():
            _check_text(text, None, key, limits, probs)
        return
    stack: list[tuple[Any, Any, Any, int]] = [(None, None, data, 0)]
    while stack:
        parent, key, value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, parent, key, limits, probs)
        elif isinstance(value, (dict, list, tuple)):
            if isinstance(value, dict):
                _check_keys(value, parent, key, probs)
            if value and depth >= limits.max_depth:
                probs.add(_path(parent, key), P.TOO_DEEP, f"value is nested more than {limits.max_depth} levels deep",
                          "flatten the structure; chat rows need only a few levels")
                return  # one such problem per row is enough, and the rest may be just as deep
            here = (parent, key)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(reversed([(here, k, v, depth + 1) for k, v in items]))
        elif isinstance(value, BigNumber) or (isinstance(value, int) and _too_many_digits(value, limits)):
            digits = value.digits if isinstance(value, BigNumber) else len(str(abs(value)))
            probs.add(_path(parent, key), P.NUMBER_TOO_LARGE,
                      f"number has {digits:,} digits (limit {limits.max_number_digits})",
                      "write such values as text (in quotes), or remove them")


def _path(parent: Any, key: Any) -> str | None:
    """``messages[0].content`` from the (parent, key) chain; ``None`` for the row itself."""
    keys = []
    while key is not None or parent is not None:
        keys.append(key)
        parent, key = parent if parent is not None else (None, None)
    text = ""
    for k in reversed([k for k in keys if k is not None]):
        text += f"[{k}]" if isinstance(k, int) else (f".{k}" if text else str(k))
    return text or None


def _check_keys(value: dict, parent: Any, key: Any, probs: RowProblems) -> None:
    """Keys are written out too (tool schemas), so they must be storable text as well."""
    for name in value:
        if isinstance(name, str) and ("\0" in name or _may_have_surrogate(name)):
            probs.add(_path(parent, key), P.ENCODING, f"a field name holds a NUL or a lone surrogate: {name!r}",
                      "rename the field to plain text")


def _too_many_digits(value: int, limits: RowLimits) -> bool:
    # bit_length first: str() of a large int is quadratic
    return value.bit_length() > 3.33 * limits.max_number_digits - 4 and len(str(abs(value))) > limits.max_number_digits


def _check_text(text: str, parent: Any, key: Any, limits: RowLimits, probs: RowProblems) -> None:
    if "\0" in text:
        probs.add(_path(parent, key), P.NUL_BYTE, f"text contains a NUL byte (at character {text.index(chr(0)) + 1})",
                  "remove the NUL (\\u0000) characters; they are not text and break file paths")
    if not text.isascii() and _may_have_surrogate(text):
        lone = _SURROGATE.search(text).group()
        probs.add(_path(parent, key), P.ENCODING,
                  f"text holds a lone UTF-16 surrogate \\u{ord(lone):04x} (half of a character)",
                  "fix the \\u escape: a character beyond U+FFFF needs both halves (e.g. \\ud83d\\ude00)")
    if len(text) * 4 > limits.max_text_bytes:  # only then can it exceed the limit in UTF-8
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > limits.max_text_bytes:
            probs.add(_path(parent, key), P.TEXT_TOO_LONG,
                      f"text is {size:,} bytes (limit {limits.max_text_bytes:,} per field)",
                      "split it into shorter rows, or raise the text-field limit of the import")


def _may_have_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")  # in C, far faster than a regex scan; fails only on surrogates
        return False
    except UnicodeEncodeError:
        return True


# Surrogates cannot be written as UTF-8; a JSON "\ud83d" escape without its other half yields one.
_SURROGATE = re.compile("[\ud800-\udfff]")
