"""IO requests: what a flow awaits when it suspends.

A flow's coroutine yields one of these at every suspension point. Requests live only in memory:
a checkpoint records the request's *fingerprint* (its kind and key fields) so that replay can check
that the re-run flow asks for the same thing, and the live request is re-created by the replay.
Payloads are already encoded when a request is made, so a value that can't be serialised fails at
the ``send`` call in the flow's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

#: ``(session id, encoded payload)`` pairs.
Payloads = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one payload on each session; resumes at once (no wait for delivery)."""

    payloads: Payloads


@dataclass(frozen=True, slots=True)
class Receive:
    """Wait for the next payload on every one of ``sessions``; resumes with ``{session: bytes}``.

    At ``until`` (if set) with a payload still missing, the flow gets a ReceiveTimeoutException.
    """

    sessions: tuple[str, ...]
    until: datetime | None = None
    #: Seconds to wait before the flow (a ``TimedFlow``) is retried from its checkpoint.
    timed: float | None = None


@dataclass(frozen=True, slots=True)
class SendAndReceive:
    """Send, then receive on ``sessions`` (until ``until``, as :class:`Receive`)."""

    payloads: Payloads
    sessions: tuple[str, ...]
    until: datetime | None = None
    timed: float | None = None


@dataclass(frozen=True, slots=True)
class CloseSessions:
    """Close our end of each session (send End)."""

    sessions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GetFlowInfo:
    """Wait until each session is confirmed; resumes with ``{session: FlowInfo}``."""

    sessions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    """A durable timer: resume at ``until`` (absolute: a restored flow keeps its wake-up time)."""

    until: datetime


@dataclass(frozen=True, slots=True)
class Execute:
    """Run an external operation off the flow's thread; resumes with its (recorded) result."""

    name: str
    fn: Callable[..., object] = field(compare=False, repr=False)
    args: tuple[object, ...] = field(compare=False, repr=False, default=())


@dataclass(frozen=True, slots=True)
class Query:
    """Read committed data from the node's database; the rows are recorded in the journal."""

    sql: str
    params: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class AwaitSignal:
    """Wait for the signal ``name`` (sent to this flow by an operator or a program over RPC).

    Resumes with the signal's encoded payload; at ``until`` (if set) without one, the flow gets
    :class:`~parley.protocol.errors.SignalTimeoutException`. ``expected`` is the type expression
    the payload must match: a signal of another type sent while the flow waits is refused.
    """

    name: str
    until: datetime | None = None
    expected: object = field(compare=False, repr=False, default=None)


@dataclass(frozen=True, slots=True)
class ForceCheckpoint:
    """Write a checkpoint now (entering an idempotent sub-flow from a non-idempotent flow)."""


Request = (
    Send
    | Receive
    | SendAndReceive
    | CloseSessions
    | GetFlowInfo
    | Sleep
    | Execute
    | Query
    | AwaitSignal
    | ForceCheckpoint
)

REQUEST_TYPES: tuple[type, ...] = (
    Send,
    Receive,
    SendAndReceive,
    CloseSessions,
    GetFlowInfo,
    Sleep,
    Execute,
    Query,
    AwaitSignal,
    ForceCheckpoint,
)

_KINDS: dict[type, str] = {
    Send: "send",
    Receive: "receive",
    SendAndReceive: "send_and_receive",
    CloseSessions: "close",
    GetFlowInfo: "flow_info",
    Sleep: "sleep",
    Execute: "execute",
    Query: "query",
    AwaitSignal: "signal",
    ForceCheckpoint: "checkpoint",
}


def kind(request: Request) -> str:
    """The request's kind, as shown to operators (``"receive"``, ``"sleep"``, ...)."""
    return _KINDS[type(request)]


def sessions_of(request: Request) -> tuple[str, ...]:
    """Every session a request touches, in order, without repeats."""
    match request:
        case Send(payloads=payloads):
            return tuple(dict.fromkeys(s for s, _ in payloads))
        case SendAndReceive(payloads=payloads, sessions=sessions):
            return tuple(dict.fromkeys([*(s for s, _ in payloads), *sessions]))
        case Receive(sessions=sessions) | CloseSessions(sessions=sessions):
            return sessions
        case GetFlowInfo(sessions=sessions):
            return sessions
        case _:
            return ()


def fingerprint(request: Request) -> str:
    """What replay compares: the request's kind and key fields (not payloads)."""
    match request:
        case Send(payloads=payloads):
            return "send " + ",".join(s for s, _ in payloads)
        case SendAndReceive(payloads=payloads, sessions=sessions):
            return "sar " + ",".join(s for s, _ in payloads) + ";" + ",".join(sessions)
        case Receive(sessions=sessions):
            return "recv " + ",".join(sessions)
        case CloseSessions(sessions=sessions):
            return "close " + ",".join(sessions)
        case GetFlowInfo(sessions=sessions):
            return "info " + ",".join(sessions)
        case Sleep(until=until):
            return "sleep " + until.isoformat()
        case Execute(name=name):
            return "exec " + name
        case Query(sql=sql):
            return "query " + sql
        case AwaitSignal(name=name):
            return "signal " + name
        case ForceCheckpoint():
            return "checkpoint"


def fingerprint_sessions(fingerprint: str) -> tuple[str, ...]:
    """The session ids a request fingerprint names (see :func:`fingerprint`), in order."""
    kind, _, rest = fingerprint.partition(" ")
    if kind not in {"send", "sar", "recv", "close", "info"} or not rest:
        return ()
    names = rest.replace(";", ",").split(",")
    return tuple(dict.fromkeys(name for name in names if name))


__all__ = [
    "REQUEST_TYPES",
    "AwaitSignal",
    "CloseSessions",
    "Execute",
    "ForceCheckpoint",
    "GetFlowInfo",
    "Payloads",
    "Query",
    "Receive",
    "Request",
    "Send",
    "SendAndReceive",
    "Sleep",
    "fingerprint",
    "fingerprint_sessions",
    "kind",
    "sessions_of",
]
