"""One registry for every name a study may call: layers, initializers, regularizers, optimizers,
losses (and the schedules and callbacks that come next), and datasets. A registry maps a Keras
name to a builder whose Python signature *is* the Keras signature: its defaults are Keras' and
binding a call's arguments to it is the validation.

>>> LOSSES = Registry("loss", StudyError)
>>> @LOSSES.register("CategoricalCrossentropy", aliases=("categorical_crossentropy",))
... def categorical(from_logits=False, label_smoothing=0.0): ...
>>> LOSSES.bind(Call("CategoricalCrossentropy", (), (("from_logits", True),)))
{'from_logits': True}

Argument aliases Keras accepts for every call (Keras 2's ``lr``) are declared once, in
:data:`ARGUMENT_ALIASES`. This module imports no torch and nothing of mnistlab's but its errors.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Iterable, Iterator

from .errors import MnistlabError

ARGUMENT_ALIASES = {"lr": "learning_rate"}  # Keras 2's old spellings, accepted by every call


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``did you mean 'Dense'?`` or the list of valid names, for error messages."""
    choices = sorted(choices)
    folded = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.6)
    if close:
        return f"did you mean {folded[close[0]]!r}?"
    return "known: " + ", ".join(choices)


def fold(name: str) -> str:
    """The spelling-insensitive key: ``HeNormal``, ``he_normal`` and ``henormal`` are one name."""
    return name.replace("_", "").lower()


class Registry:
    """Keras name -> builder, with one lookup (aliases, optional case/underscore folding, did-you-mean)
    and one argument binder (positional and keyword, aliases, required, unknown, repeated)."""

    def __init__(self, what: str, error: type[MnistlabError] = MnistlabError, *, folded: bool = False):
        self.what, self.error, self.folded = what, error, folded
        self._builders: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, builder: Callable[..., Any] | None = None, *, aliases: Iterable[str] = ()):
        """Add ``builder`` under ``name`` (and ``aliases``); usable as a decorator."""
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._builders[name] = fn
            for alias in (name, *aliases):
                self._aliases[fold(alias) if self.folded else alias] = name
            return fn
        return add(builder) if builder is not None else add

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.key(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self._builders[self.lookup(name)]

    def get(self, name: str, default: Any = None) -> Any:
        key = self.key(name)
        return default if key is None else self._builders[key]

    def names(self) -> list[str]:
        return list(self._builders)

    def __setitem__(self, name: str, builder: Any) -> None:  # a mapping's way to register (tests add entries)
        self.register(name, builder)

    def __delitem__(self, name: str) -> None:
        key = self.lookup(name)
        del self._builders[key]
        self._aliases = {alias: k for alias, k in self._aliases.items() if k != key}

    def key(self, name: str) -> str | None:
        """The registered name ``name`` stands for, or None."""
        return self._aliases.get(fold(name) if self.folded else name)

    def lookup(self, name: str) -> str:
        """The registered name, or the registry's error listing the known ones."""
        key = self.key(name)
        if key is None:
            raise self.error(f"unknown {self.what} {name!r}; {did_you_mean(name, self._builders)}")
        return key

    def bind(self, call: Any, skip: int = 0) -> dict[str, Any]:
        """``call``'s arguments bound to its builder's signature (less the first ``skip`` parameters)."""
        key = self.lookup(call.name)
        params = list(inspect.signature(self._builders[key]).parameters.values())[skip:]
        names = [p.name for p in params]
        if len(call.args) > len(names):
            raise self.error(f"{call.name} takes at most {len(names)} positional arguments "
                             f"({', '.join(names)}), got {len(call.args)}")
        kwargs = dict(zip(names, call.args))
        spelled = {}  # argument -> how the call spelled it
        for given, value in call.kwargs:
            name = ARGUMENT_ALIASES.get(given, given) if given not in names else given
            if name not in names:
                raise self.error(f"{call.name} got unexpected argument {given!r}; {did_you_mean(given, names)}")
            if name in kwargs:
                alias = next((s for s in (given, spelled.get(name)) if s and s != name), None)
                also = f" ({alias} is another name for {name})" if alias else ""
                raise self.error(f"{call.name} got {name!r} twice{also}")
            kwargs[name], spelled[name] = value, given
        for p in params:
            if p.default is inspect.Parameter.empty and p.name not in kwargs:
                raise self.error(f"{call.name} needs argument {p.name!r}, e.g. {call.name}({p.name}=...)")
        return kwargs

    def defaults(self, call: Any, skip: int = 0) -> dict[str, Any]:
        """Every argument of the call's builder, the call's values over the Keras defaults."""
        key = self.lookup(call.name)
        params = list(inspect.signature(self._builders[key]).parameters.values())[skip:]
        given = self.bind(call, skip)
        return {p.name: given.get(p.name, p.default) for p in params}

    def build(self, call: Any, *leading: Any) -> Any:
        """The builder called with ``leading`` positional values, then the call's bound arguments."""
        return self._builders[self.lookup(call.name)](*leading, **self.bind(call, skip=len(leading)))
