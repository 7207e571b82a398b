"""A plain-data rendering of decoded values, for comparing golden fixtures field by field.

Every value the codec can decode becomes JSON-able data that names its type: a dataclass becomes
``{"@type": "module:Class", field: ...}``, an exception ``{"@exception": ..., "args": ...,
"fields": ...}``, bytes their hex (and, when they hold a CBOR document, its rendering too). The
rendering is written into ``expected.json`` when the fixtures are made; the tests render what the
current code decodes and compare the two, so a change of any field's name, type or value shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import sqlite3
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from parley.protocol import codec
from parley.protocol.errors import CodecError, type_name

JSON = Any


def render(value: object) -> JSON:
    """Render a decoded value as JSON-able data that keeps its types."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"@float": repr(value)}
    if isinstance(value, bytes):
        return render_bytes(value)
    if isinstance(value, enum.Enum):
        return {"@enum": type_name(type(value)), "value": render(value.value)}
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, tuple):
        return {"@tuple": [render(v) for v in value]}
    if isinstance(value, set | frozenset):
        items = sorted((render(v) for v in value), key=repr)
        return {"@set" if isinstance(value, set) else "@frozenset": items}
    if isinstance(value, dict):
        return {"@dict": [[render(k), render(v)] for k, v in value.items()]}
    if isinstance(value, datetime | date):
        return {"@" + type(value).__name__: value.isoformat()}
    if isinstance(value, Decimal):
        return {"@decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"@uuid": str(value)}
    if isinstance(value, BaseException):
        return render_exception(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: render(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"@type": type_name(type(value)), **fields}
    raise TypeError(f"don't know how to render {type(value).__name__}")


def render_bytes(data: bytes) -> JSON:
    """Hex, plus the rendering of the CBOR document the bytes hold (payloads, outcomes)."""
    rendered: dict[str, JSON] = {"@bytes": data.hex()}
    with contextlib.suppress(CodecError):  # not every byte string holds a document
        rendered["cbor"] = render(codec.decode(data))
    return rendered


def render_exception(error: BaseException) -> JSON:
    declared = {
        name: render(getattr(error, name))
        for name in sorted(vars(error))
        if not name.startswith("_") and name not in {"args"}
    }
    return {
        "@exception": type_name(type(error)),
        "args": [render(a) for a in error.args],
        "fields": declared,
    }


def render_database(path: str) -> JSON:
    """Every row of a node database that a restore depends on, decoded (timestamps left out)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return _render_tables(conn)
    finally:
        conn.close()


def _render_tables(conn: Any) -> JSON:
    flows = {}
    for flow_id, flow_class, kind, args, started_by, client_id in conn.execute(
        "SELECT flow_id, flow_class, kind, args, started_by, client_id FROM flow_start ORDER BY seq"
    ):
        flows[flow_id] = {
            "flow_class": flow_class,
            "kind": kind,
            "args": render_bytes(args),
            "started_by": started_by,
            "client_id": client_id,
        }
    for flow_id, status, header, suspends, pending, step, journal_len in conn.execute(
        "SELECT flow_id, status, header, suspends, pending_request, progress_step, journal_len "
        "FROM flow_header"
    ):
        flows[flow_id]["header"] = {
            "status": status,
            "header": render_bytes(header),
            "suspends": suspends,
            "pending_request": pending,
            "progress_step": step,
            "journal_len": journal_len,
        }
    for flow_id, idx, entry in conn.execute("SELECT flow_id, idx, entry FROM journal"):
        flows[flow_id].setdefault("journal", []).append([idx, render_bytes(entry)])
    return {
        "flows": flows,
        "processed_init": [
            list(row)
            for row in conn.execute(
                "SELECT sender, initiator_session, flow_id FROM processed_init "
                "ORDER BY sender, initiator_session"
            )
        ],
        "flow_result": [
            [
                flow_id,
                client_id,
                status,
                render_bytes(v) if v else None,
                render_bytes(e) if e else None,
                flow_class,
            ]
            for flow_id, client_id, status, v, e, flow_class in conn.execute(
                "SELECT flow_id, client_id, status, value, error, flow_class FROM flow_result "
                "ORDER BY flow_id"
            )
        ],
        "app_migrations": [
            list(row) for row in conn.execute("SELECT app, idx FROM app_migrations ORDER BY 1, 2")
        ],
        "golden_ledger": [
            list(row) for row in conn.execute("SELECT who, amount FROM golden_ledger ORDER BY 1")
        ],
        "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
    }


__all__ = ["render", "render_bytes", "render_database", "render_exception"]
