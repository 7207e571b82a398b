"""The errors of the RPC service, as codes on the wire and as exceptions in clients.

Every refusal travels as an error reply ``{"code": ..., "message": ..., "details": {...}}`` (see
``docs/rpc.md``); :func:`error_from_reply` turns one back into the exception of its code, so a
client catches ``PermissionRefused`` rather than parsing text. The message is written for a
person: it names what was refused and what would fix it. Codes a client does not know become a
plain :class:`RpcError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from parley.protocol.errors import ParleyError

__all__ = [
    "BadArgument",
    "BadRequest",
    "ClientIdConflict",
    "FlowNotFound",
    "InternalError",
    "NodeUnavailable",
    "NodeUnreachable",
    "NotAuthenticated",
    "NotStartable",
    "PermissionRefused",
    "Refused",
    "RemoteFlowError",
    "RpcError",
    "RpcTimeout",
    "UnknownFlowClass",
    "error_from_reply",
]


class RpcError(ParleyError):
    """A request the node refused or could not answer. ``code`` names the kind (``docs/rpc.md``).

    Args:
        message: what went wrong, for a person.
        details: machine-readable facts (``permission``, ``suggestions``, ``parameter``...).
    """

    code: ClassVar[str] = "internal"
    #: Whether the request itself was wrong (the CLI exits with 2), rather than the situation.
    bad_input: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = details

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadRequest(RpcError):
    """The request is not a request: undecodable, a missing or mistyped field, a bad version."""

    code = "bad_request"
    bad_input = True


class NotAuthenticated(RpcError):
    """No credentials, an unknown user or a wrong password (the reply does not say which)."""

    code = "unauthenticated"


class PermissionRefused(RpcError):
    """The user lacks the permission the operation needs (``details["permission"]``)."""

    code = "forbidden"


class UnknownFlowClass(RpcError):
    """No flow class of that name is loaded on the node (``details["suggestions"]``)."""

    code = "unknown_flow_class"
    bad_input = True


class NotStartable(RpcError):
    """The flow class is not marked ``@startable_by_rpc``."""

    code = "not_startable"
    bad_input = True


class BadArgument(RpcError):
    """A flow argument does not fit its parameter (``details["parameter"]``, ``["expected"]``)."""

    code = "bad_argument"
    bad_input = True


class ClientIdConflict(RpcError):
    """The client id names another flow (another class or other arguments)."""

    code = "client_id_in_use"
    bad_input = True


class FlowNotFound(RpcError):
    """No such flow (or, for a finished flow started without a client id, no longer known)."""

    code = "not_found"


class Refused(RpcError):
    """The node refused the operation on this flow: a signal of the wrong type, say."""

    code = "refused"
    bad_input = True


class RpcTimeout(RpcError, TimeoutError):
    """No answer (or no result yet) within the time given."""

    code = "timeout"


class NodeUnavailable(RpcError):
    """The node is stopping, or not running."""

    code = "unavailable"


class NodeUnreachable(RpcError):
    """No RPC service answered: NATS is out of reach, or the node does not run (client side)."""

    code = "unreachable"


class InternalError(RpcError):
    """The node failed while answering (its log has the traceback)."""

    code = "internal"


class RemoteFlowError(ParleyError):
    """A flow failed on the node with an exception this process can't rebuild.

    Args:
        type_name: the exception's class, ``"module:QualName"``.
        message: its message.
    """

    type_name: str

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


_BY_CODE: dict[str, type[RpcError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        NotAuthenticated,
        PermissionRefused,
        UnknownFlowClass,
        NotStartable,
        BadArgument,
        ClientIdConflict,
        FlowNotFound,
        Refused,
        RpcTimeout,
        NodeUnavailable,
        NodeUnreachable,
        InternalError,
    )
}


def error_from_reply(error: Mapping[str, Any]) -> RpcError:
    """The exception for an error reply's ``error`` map (an unknown code gives an RpcError)."""
    code = str(error.get("code", "internal"))
    details = error.get("details")
    cls = _BY_CODE.get(code, RpcError)
    facts = dict(details) if isinstance(details, dict) else {}
    exc = cls(str(error.get("message", code)), **facts)
    if cls is RpcError:
        exc.details["code"] = code
    return exc
