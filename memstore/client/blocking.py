"""Blocking methods made from their async twins, so each client call is written once.

In a class body, ``put_tensor = blocking(put_tensor_async)`` makes ``put_tensor``: the same
parameters, the same docstring (plus a line saying it blocks), visible to ``help()``,
``inspect.signature`` and IDEs (the types flow through a ``ParamSpec``). It runs the async
twin through its host's ``_sync``, so the call's first request may take the transport's
fast path (:class:`memstore.client.requests.InlineTurn`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")


class Host(Protocol):
    """What a class whose methods ``blocking`` makes must have."""

    def _sync(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs).result()``, its first request allowed inline."""


H = TypeVar("H", bound=Host)


def blocking(async_method: Callable[Concatenate[H, P], Any]) -> Callable[Concatenate[H, P], Any]:
    """The blocking twin of ``async_method`` (named ``x_async``): a method ``x`` that waits
    for the future and returns its result (or raises its error)."""
    name = async_method.__name__.removesuffix("_async")
    if name == async_method.__name__:
        raise ValueError(f"{async_method.__qualname__}: a blocking twin needs an *_async method")

    def method(self: H, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self._sync(async_method, self, *args, **kwargs)

    method.__name__ = name
    method.__qualname__ = async_method.__qualname__.removesuffix("_async")
    method.__module__ = async_method.__module__
    method.__doc__ = (
        f"{inspect.cleandoc(async_method.__doc__ or '')}\n\n"
        f"Blocks: waits for :meth:`{async_method.__name__}`'s future and returns its result."
    )
    signature = inspect.signature(async_method)
    method.__signature__ = signature.replace(return_annotation="Any")  # type: ignore[attr-defined]
    method.__annotations__ = {**async_method.__annotations__, "return": "Any"}
    return method
