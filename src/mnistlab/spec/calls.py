"""Keras call syntax, parsed safely: ``"Dense(364, activation='relu')"`` -> :class:`Call`.

Only a call of a bare name with literal arguments (numbers, strings, booleans, None, tuples,
lists) or nested calls of the same kind (``kernel_initializer=RandomNormal(stddev=0.07)``) is
admitted. Nothing is evaluated: the text goes through :mod:`ast` and :func:`ast.literal_eval`.
Which names exist is the registries' business (``layers.py``, ``optim.py``), not this module's.

>>> parse_call("Dense(10, activation='softmax')")
Call(name='Dense', args=(10,), kwargs=(('activation', 'softmax'),))
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import CallSyntaxError
from ..registry import did_you_mean  # noqa: F401 - re-exported: callers name it from here


@dataclass(frozen=True)
class Call:
    """A parsed call: ``name(*args, **dict(kwargs))``. Hashable, order-preserving plain data."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def kw(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def text(self) -> str:
        """Canonical text: one spelling per call, so equal calls hash equally."""
        parts = [_value_text(a) for a in self.args]
        parts += [f"{k}={_value_text(v)}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": [_jsonable(a) for a in self.args],
                "kwargs": {k: _jsonable(v) for k, v in self.kwargs}}


def _value_text(value: Any) -> str:
    if isinstance(value, Call):
        return value.text()
    if isinstance(value, tuple):
        inner = ", ".join(_value_text(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Call):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def parse_call(text: str, bare_name_ok: bool = False) -> Call:
    """Parse ``text`` as a Keras-style call. ``bare_name_ok`` admits ``'adam'`` or ``adam`` for ``adam()``."""
    source = text.strip()
    if bare_name_ok and source.isidentifier():
        return Call(source)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise CallSyntaxError(f"not valid call syntax ({exc.msg}); write it like Dense(64, activation='relu')") from None
    return _call(tree.body)


def _call(node: ast.AST) -> Call:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise CallSyntaxError(f"expected a call like Name(...), got {ast.unparse(node)!r}")
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        raise CallSyntaxError("*args and **kwargs are not allowed; write each argument out")
    args = tuple(_value(a) for a in node.args)
    kwargs = tuple((k.arg, _value(k.value)) for k in node.keywords)
    return Call(node.func.id, args, kwargs)


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Call):
        return _call(node)
    try:
        value = ast.literal_eval(node)
    except ValueError:
        raise CallSyntaxError(
            f"argument {ast.unparse(node)!r} is not a literal (numbers, strings, True/False/None, tuples)"
        ) from None
    return tuple(value) if isinstance(value, list) else value
