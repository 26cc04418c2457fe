"""Layer-string templates: ``"Dense({units})"`` filled from a sweep point, plain names only.

``str.format`` is never used on study text: it follows attributes and indexes of the values
(``{u.__class__}``, ``{u[0]}``) and applies conversions and format specs (``{u!r}``, ``{u:>5}``).
A template admits ``{name}`` (a sweep key) and the escapes ``{{`` and ``}}`` for literal braces;
anything else with a brace is a :class:`TemplateError`.

>>> fill("Dense({units}, activation='relu')", {"units": 64})
"Dense(64, activation='relu')"
>>> names("Dense({units}, name='x{{1}}')")
['units']
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import StudyError

# in order of preference at each position: an escape, a braced field, a lone brace
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
ALLOWED = "only plain names like {units} (a sweep key) are filled in; write {{ or }} for a literal brace"


class TemplateError(StudyError):
    """A layer string's braces are not ``{name}``, ``{{`` or ``}}``; the caller adds file, model and layer."""


def _parts(text: str) -> list[str | tuple[str]]:
    """Literal text as ``str``, fields as ``(name,)``, in order."""
    parts: list[str | tuple[str]] = []
    start = 0
    for match in _TOKEN.finditer(text):
        parts.append(text[start:match.start()])
        token, field = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif field is not None and field.isidentifier():
            parts.append((field,))
        elif field is not None:
            raise TemplateError(f"template field {token!r} is not allowed: {ALLOWED}")
        else:
            raise TemplateError(f"a lone {token!r} at character {match.start() + 1}: {ALLOWED}")
        start = match.end()
    parts.append(text[start:])
    return parts


def names(text: str) -> list[str]:
    """The template variables of ``text``, in order of appearance (repeats kept)."""
    return [part[0] for part in _parts(text) if isinstance(part, tuple)]


def fill(text: str, values: dict[str, Any]) -> str:
    """``text`` with each ``{name}`` replaced by ``str(values[name])`` and ``{{``/``}}`` by a brace."""
    return "".join(part if isinstance(part, str) else str(values[part[0]]) for part in _parts(text))
