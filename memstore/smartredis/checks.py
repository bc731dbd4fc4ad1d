"""SmartRedis's argument checks, derived from each method's own signature.

SmartRedis checks argument types before it calls its core and raises ``TypeError``; the
compat ``Client`` writes each method with SmartRedis's signature and marks it
:func:`checked`, so the checks are read from the annotations and cannot drift from them.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from memstore.client import Client as MemstoreClient
from memstore.dataset import DataSet
from memstore.errors import MemstoreError
from memstore.smartredis.error import translate
from memstore.smartredis.util import typecheck

__all__ = ["CHECKED_TYPES", "argument_types", "checked"]

#: The argument types SmartRedis checks (names, numbers, flags, lists, arrays, datasets).
#: Parameters annotated otherwise (a model's bytes, a function) are left to the call
#: itself, which raises with its own message.
CHECKED_TYPES = frozenset({str, int, bool, list, np.ndarray, DataSet, type(None)})


def argument_types(function: Callable) -> dict[str, tuple[type, ...]]:
    """The ``isinstance`` check of each parameter annotated with :data:`CHECKED_TYPES`
    only, in the annotation's order: ``inputs: list[str] | str | None`` gives
    ``(list, str, NoneType)``."""
    hints = typing.get_type_hints(function)
    checks = {}
    for name in inspect.signature(function).parameters:
        if name not in hints:
            continue
        hint = hints[name]
        union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        members = typing.get_args(hint) if union else (hint,)
        classes = tuple(typing.get_origin(member) or member for member in members)
        if all(c in CHECKED_TYPES for c in classes):
            checks[name] = classes
    return checks


def checked(method: Callable) -> Callable:
    """``method`` behind SmartRedis's argument checks (:func:`argument_types`), with
    memstore errors raised as SmartRedis's classes; without a docstring of its own it
    shows :class:`memstore.Client`'s."""
    signature = inspect.signature(method)
    checks = argument_types(method)
    label = f"Client.{method.__name__}"

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        for name, classes in checks.items():
            if name in bound.arguments:
                typecheck(bound.arguments[name], name, classes)
        try:
            return method(self, *args, **kwargs)
        except MemstoreError as exc:
            raise translate(exc, label) from exc

    if call.__doc__ is None:
        call.__doc__ = getattr(getattr(MemstoreClient, method.__name__, None), "__doc__", None)
    return call
