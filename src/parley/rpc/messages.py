"""The RPC wire: subjects, request and reply documents, and the rows they carry.

Everything is CBOR written by the whitelist codec (``parley.protocol.codec``); ``docs/rpc.md``
describes each document for clients in other languages.

* A request to ``parley.rpc.<node>.<operation>`` is a map ``{"v": 1, "user": str, "password":
  str, "args": {...}}``.
* Its reply is ``{"v": 1, "ok": true, "result": {...}}`` or ``{"v": 1, "ok": false, "error":
  {"code": str, "message": str, "details": {...}}}``; an error reply also carries nats.micro's
  ``Nats-Service-Error`` and ``Nats-Service-Error-Code`` headers.
* A flow's outcome (in ``result`` and ``track`` replies and the feed's last event) holds the
  return value twice: ``value``, its own CBOR document (so a client that can't decode a class of
  the flow's app still reads the rest), and ``value_text``, its ``repr`` for people.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final

from parley.engine.hospital import Admission
from parley.protocol import codec
from parley.protocol.errors import CodecError, type_name
from parley.rpc.errors import BadRequest, RpcError, error_from_reply
from parley.store import FlowSummary
from parley.transport.names import RPC_PREFIX
from parley.transport.security import FEED_PREFIX

__all__ = [
    "OPERATIONS",
    "VERSION",
    "Args",
    "Request",
    "admission_row",
    "decode_reply",
    "decode_request",
    "encode_request",
    "error_reply",
    "feed_subject",
    "flows_feed_subject",
    "ok_reply",
    "outcome_of",
    "row_matches",
    "rpc_subject",
    "summary_row",
    "tree_rows",
]

VERSION: Final = 1
#: The operations, each on ``parley.rpc.<node>.<operation>``.
OPERATIONS: Final = (
    "start_flow",
    "result",
    "reattach",
    "track",
    "list_flows",
    "kill_flow",
    "signal",
    "hospital_list",
    "hospital_show",
    "hospital_retry",
    "hospital_kill",
    "stats",
    "drain",
    "undrain",
)
#: The numeric code in nats.micro's ``Nats-Service-Error-Code`` header, by error code.
HTTP_LIKE: Final = {
    "bad_request": 400,
    "bad_argument": 400,
    "unknown_flow_class": 400,
    "not_startable": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "timeout": 408,
    "client_id_in_use": 409,
    "refused": 409,
    "unavailable": 503,
}
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TEXT_LIMIT: Final = 10_000


def rpc_subject(node: str, operation: str) -> str:
    return f"{RPC_PREFIX}.{node}.{operation}"


def feed_subject(node: str, flow_id: str) -> str:
    """The subject of one flow's progress feed: ``parley.feed.<node>.<flow id>``."""
    return f"{FEED_PREFIX}.{node}.{flow_id}"


def flows_feed_subject(node: str) -> str:
    """The subject of the flow list's changes: ``parley.feed.<node>.flows`` (no flow id is
    ``flows``: ids are hexadecimal)."""
    return f"{FEED_PREFIX}.{node}.flows"


# ---------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    user: object
    password: object
    args: Args


def encode_request(user: str | None, password: str | None, args: Mapping[str, object]) -> bytes:
    return codec.encode({"v": VERSION, "user": user, "password": password, "args": dict(args)})


def decode_request(data: bytes) -> Request:
    """The request in ``data``.

    Raises:
        BadRequest: not a request document of this version.
    """
    try:
        document = codec.decode(data)
    except CodecError as exc:
        raise BadRequest(f"the request is not a CBOR document the node accepts: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest("the request must be a CBOR map with v, user, password and args")
    if document.get("v") != VERSION:
        raise BadRequest(f"unsupported request version {document.get('v')!r} (this node: 1)")
    args = document.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest("args must be a map")
    return Request(document.get("user"), document.get("password"), Args(args))


class Args:
    """An operation's arguments, read with checks: a missing or mistyped one is a BadRequest."""

    def __init__(self, values: Mapping[Any, Any]) -> None:
        self.values = values

    def text(self, key: str, default: str | None = None) -> str:
        value = self.values.get(key, default)
        if not isinstance(value, str) or not value:
            raise BadRequest(f"{key} must be a non-empty string, not {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None:
            return None
        return self.text(key)

    def flow_id(self, key: str = "flow_id") -> str:
        value = self.text(key)
        if not _TOKEN.match(value):
            raise BadRequest(f"{key} {value!r} is not a flow id")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BadRequest(f"{key} must be a number >= 0, not {value!r}")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.values.get(key, False)
        if not isinstance(value, bool):
            raise BadRequest(f"{key} must be true or false, not {value!r}")
        return value

    def sequence(self, key: str) -> list[object]:
        value = self.values.get(key, [])
        if not isinstance(value, list | tuple):
            raise BadRequest(f"{key} must be an array, not {type(value).__name__}")
        return list(value)

    def mapping(self, key: str) -> dict[str, object]:
        value = self.values.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise BadRequest(f"{key} must be a map with string keys")
        return dict(value)

    def value(self, key: str) -> object:
        if key not in self.values:
            raise BadRequest(f"{key} is missing")
        return self.values[key]


# ---------------------------------------------------------------------- replies


def ok_reply(result: Mapping[str, object]) -> bytes:
    return codec.encode({"v": VERSION, "ok": True, "result": dict(result)})


def error_reply(error: RpcError) -> tuple[bytes, dict[str, str]]:
    """The error document and nats.micro's error headers."""
    body = {"code": error.code, "message": error.message, "details": _plain(error.details)}
    data = codec.encode({"v": VERSION, "ok": False, "error": body})
    headers = {
        "Nats-Service-Error": error.message[:1000].replace("\r", " ").replace("\n", " "),
        "Nats-Service-Error-Code": str(HTTP_LIKE.get(error.code, 500)),
    }
    return data, headers


def decode_reply(data: bytes) -> dict[str, Any]:
    """The ``result`` of a reply.

    Raises:
        RpcError: the reply is an error (the subclass of its code), or not a reply at all.
    """
    try:
        document = codec.decode(data)
    except CodecError as exc:
        raise RpcError(f"the node's reply does not decode: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise RpcError("the node's reply is not an RPC reply of version 1")
    result = document.get("result")
    if document.get("ok") is True and isinstance(result, dict):
        return result
    error = document.get("error")
    raise error_from_reply(error if isinstance(error, dict) else {"message": repr(document)})


def _plain(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details the codec can carry (anything else as its text)."""
    plain: dict[str, Any] = {}
    for key, value in details.items():
        try:
            codec.encode(value)
            plain[str(key)] = value
        except CodecError:
            plain[str(key)] = str(value)
    return plain


# ---------------------------------------------------------------------- rows and outcomes


def summary_row(summary: FlowSummary) -> dict[str, object]:
    """One flow of ``list_flows``: what it is, where it is, what it waits for, since when."""
    return {
        "flow_id": summary.flow_id,
        "flow_class": summary.flow_class,
        "status": summary.status.value,
        "progress_step": summary.progress_step,
        "waiting_for": summary.waiting_for,
        "client_id": summary.client_id,
        "suspends": summary.suspends,
        "created_at": summary.created_at,
        "since": summary.updated_at,
    }


def row_matches(row: Mapping[str, object], status: str | None, flow_class: str | None) -> bool:
    """Whether a flow row passes the filters (a class given without module matches its name)."""
    if status is not None and row.get("status") != status:
        return False
    if flow_class is None:
        return True
    name = str(row.get("flow_class") or "")
    return name == flow_class or name.rpartition(":")[2] == flow_class


def admission_row(admission: Admission, *, traceback: bool = False) -> dict[str, object]:
    """One visit to the hospital (with the traceback for ``hospital_show``)."""
    row: dict[str, object] = {
        "time": admission.time,
        "flow_id": admission.flow_id,
        "flow_class": admission.flow_class,
        "suspends": admission.suspends,
        "error_type": admission.error_type,
        "message": admission.message,
        "staff": admission.staff,
        "outcome": admission.outcome.value,
        "attempt": admission.attempt,
        "retry_in": admission.retry_in,
    }
    if traceback:
        row["traceback"] = admission.traceback
        row["causes"] = list(admission.causes)
    return row


def outcome_of(future: Future[Any]) -> dict[str, object]:
    """A finished flow's outcome: ``completed`` with its value, or ``failed``/``killed``.

    ``future`` must be done (a flow handle's).
    """
    try:
        value = future.result(0)
    except BaseException as exc:  # a killed flow's KilledFlowException is a BaseException
        killed = type(exc).__name__ == "KilledFlowException"
        return {
            "done": True,
            "outcome": "killed" if killed else "failed",
            "error": _error_of(exc),
        }
    return {"done": True, "outcome": "completed", **_value_of(value)}


def _value_of(value: object) -> dict[str, object]:
    try:
        encoded: bytes | None = codec.encode(value)
    except CodecError:
        encoded = None
    return {"value": encoded, "value_text": _text(repr(value)), "value_type": _type(value)}


def _error_of(exc: BaseException) -> dict[str, object]:
    try:
        encoded: bytes | None = codec.encode(exc)
    except CodecError:
        encoded = None
    return {"type": type_name(type(exc)), "message": _text(str(exc)), "exception": encoded}


def _type(value: object) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else type_name(cls)


def _text(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 3] + "..."


def tree_rows(rows: Sequence[tuple[int, str, bool]]) -> list[list[object]]:
    """A progress tree (``ProgressTracker.tree()``) as arrays ``[level, label, current]``."""
    return [[level, label, current] for level, label, current in rows]
