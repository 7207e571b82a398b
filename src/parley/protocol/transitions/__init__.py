"""Transitions: one module per event family, dispatched by :func:`machine.transition`."""

from parley.protocol.transitions.machine import restore_pending, transition

__all__ = ["restore_pending", "transition"]
