"""Hydra command-line overrides (`key=value`) written so that hydra's own parser reads back exactly the value given.

verl takes its whole config as hydra overrides. A value printed with Python's `str` is not one: a dict comes out
as `{'base_url': ...}`, which hydra refuses, and a string such as `1991`, `true` or one with a space or a comma
would be read as a number, a bool or a list. Nested dicts become one override per leaf (`a.b.c=v`), so each
value stays readable in `command.sh`.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

# What hydra reads as an unquoted string (a subset of its grammar's primitive characters, no interpolation).
_BARE = re.compile(r"[A-Za-z0-9_\-./:@%+~]+")
# Unquoted, hydra would read these as a number, a bool, null, inf or nan instead of a string.
_ESCAPES = re.compile(r'(\\*)(\$\{|"|$)')
_NOT_A_STRING = re.compile(r"[+-]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][+-]?\d+)?|[+-]?(inf|nan)|true|false|null", re.IGNORECASE)


def value(v: Any) -> str:
    """`v` in hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else repr(v)  # repr: 1e-06, inf, -inf, all read back as the same float
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_key(k)}:{value(x)}" for k, x in v.items()) + "}"
    text = str(v)
    if _BARE.fullmatch(text) and not _NOT_A_STRING.fullmatch(text):
        return text
    # Double-quoted. Backslashes are literal except before a quote, the end or `${` (hydra's and omegaconf's
    # escapes): there they are doubled; a quote is escaped, and so is `${`, so a text is never an interpolation.
    return '"' + _ESCAPES.sub(lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), text) + '"'


def _key(k: Any) -> str:
    text = str(k)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", text):
        raise ValueError(f"{text!r} cannot be a hydra config key (letters, digits, _ and - only)")
    return text


def leaves(prefix: str, v: Any) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of nested dicts under `prefix`; an empty dict is one leaf."""
    if isinstance(v, dict) and v:
        for k, x in v.items():
            yield from leaves(f"{prefix}.{_key(k)}", x)
    else:
        yield prefix, v


def override(key: str, v: Any, add: bool = False) -> list[str]:
    """`key=value` (one per leaf of a dict value); `add` writes hydra's `+key=value`, for keys verl does not declare."""
    sign = "+" if add else ""
    return [f"{sign}{k}={value(x)}" for k, x in leaves(key, v)]
