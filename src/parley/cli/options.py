"""Options that several commands share, declared once.

:func:`grouped` gives a typer command the parameters of a *template* function (the shared options,
with their help and defaults) in place of one parameter of its own, and passes the command what the
template returns for the values given. So ``parley flow kill`` and ``parley hospital kill`` declare
``rpc: Rpc`` and get the same ``--nats``, ``--user``, ``--password``, ``--timeout`` and ``--debug``,
listed last in their ``--help`` as before, from one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def grouped(name: str, template: Callable[..., object]) -> Callable[[Callable[..., None]], Any]:
    """A decorator: the command's parameter ``name`` becomes the options of ``template``."""
    shared = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(template, eval_str=True).parameters.values()
    ]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != name]
        if len(own) == len(signature.parameters):
            raise TypeError(f"{command.__name__} has no parameter {name!r} for the options")

        def run(**values: Any) -> None:
            options = template(**{p.name: values.pop(p.name) for p in shared})
            command(**values, **{name: options})

        run.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(run, attribute, getattr(command, attribute))
        return run

    return decorate
