"""``parley wire``: look at Parley's wire messages (``docs/wire.md``).

``parley wire decode`` prints captured NATS messages (files, stdin, ``--hex``/``--base64``) or the
messages stored in a JetStream stream as JSON: every envelope field, the bodies by field name,
payloads decoded, and the whitelisted types named (``{"$tuple": [...]}``, ``{"$decimal": "1.5"}``,
``{"$object": "p.FlowInfo", ...}``). A message that does not decode is printed as
``{"error": <the decoder's reason>, ...}`` and makes the command exit with 1.

Messages are decoded exactly as a node decodes them (``decode_envelopes``, the whitelist codec).
A payload of a type this process has not loaded is shown by position, with the reason, rather than
refused: pass ``--app`` to import the app's module first and see its types by field name.

Reading a stream uses JetStream's message-get API, so nothing is consumed, and a node's own
consumer (the only one its work-queue stream allows) is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import json
import math
import sys
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import cbor2
import typer

from parley.protocol import codec
from parley.protocol.codec_registry import _BY_TYPE  # the registered names of wire types
from parley.protocol.errors import DeserializationError, type_name
from parley.protocol.messages import BATCH, Envelope, decode_envelopes

wire_app = typer.Typer(help="Look at Parley's wire messages.", no_args_is_help=True)


@wire_app.callback()
def wire() -> None:
    """Look at Parley's wire messages (docs/wire.md)."""


#: Body fields that hold a separately encoded CBOR item.
_ENCODED_FIELDS = frozenset({"first_payload", "payload", "exception"})
_TAG_NAMES = {
    codec.TAG_TUPLE: "$tuple",
    codec.TAG_SET: "$set",
    codec.TAG_FROZENSET: "$frozenset",
    codec.TAG_DATETIME: "$datetime",
    codec.TAG_DATE: "$date",
    codec.TAG_DECIMAL: "$decimal",
}


@wire_app.command("decode")
def decode_command(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files holding one captured message (its payload bytes) each; - reads stdin."
        ),
    ] = None,
    hex_text: Annotated[str | None, typer.Option("--hex", help="A message as hexadecimal.")] = None,
    base64_text: Annotated[
        str | None, typer.Option("--base64", help="A message as base64.")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(help="The subject the message came on: checked against its envelope."),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(help="Decode the messages stored in this stream (PARLEY_<node>)."),
    ] = None,
    nats_url: Annotated[
        str, typer.Option("--nats", help="The NATS server of --stream.")
    ] = "nats://127.0.0.1:4222",
    limit: Annotated[int, typer.Option(min=1, help="At most this many stream messages.")] = 1000,
    apps: Annotated[
        list[str] | None,
        typer.Option("--app", help="Import this module first, to name its types' fields."),
    ] = None,
    compact: Annotated[bool, typer.Option(help="One JSON line per message.")] = False,
) -> None:
    """Print captured messages, or a stream's, as JSON; say why any of them does not decode."""
    for module in apps or []:
        try:
            import_module(module)
        except ImportError as exc:
            raise typer.BadParameter(f"cannot import {module}: {exc}", param_hint="--app") from exc
    captured = list(_inputs(files or [], hex_text, base64_text, subject))
    if stream is not None:
        captured.extend(_stream_messages(stream, nats_url, limit))
    if not captured:
        raise typer.BadParameter("give files, --hex, --base64 or --stream")
    failed = False
    for data, where in captured:
        shown = describe(data, **where)
        failed = failed or "error" in shown
        typer.echo(json.dumps(shown, indent=None if compact else 2, ensure_ascii=False))
    if failed:
        raise typer.Exit(1)


def _inputs(
    files: list[Path], hex_text: str | None, base64_text: str | None, subject: str | None
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    where: dict[str, Any] = {"subject": subject}
    for path in files:
        if str(path) == "-":
            yield sys.stdin.buffer.read(), {**where, "source": "stdin"}
            continue
        try:
            yield path.read_bytes(), {**where, "source": str(path)}
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    if hex_text is not None:
        try:
            yield bytes.fromhex(hex_text), where
        except ValueError as exc:
            raise typer.BadParameter(f"not hexadecimal: {exc}", param_hint="--hex") from exc
    if base64_text is not None:
        try:
            yield base64.b64decode(base64_text, validate=True), where
        except (binascii.Error, ValueError) as exc:
            raise typer.BadParameter(f"not base64: {exc}", param_hint="--base64") from exc


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def describe(
    data: bytes,
    *,
    subject: str | None = None,
    headers: dict[str, str] | None = None,
    **where: Any,
) -> dict[str, Any]:
    """One captured NATS message as JSON-ready data, or the reason it does not decode.

    Args:
        data: the message's payload, as published.
        subject: the subject it came on, if known: checked against the envelope.
        headers: its NATS headers, if known.
        where: more facts to show first (its source, its stream sequence).

    Returns:
        ``{..., "error": reason}`` when the message is not a well-formed envelope or batch;
        otherwise the envelope (``kind``, ``id``, ``sender``, ``recipient``, ``body``), or the
        batch with its ``envelopes``.
    """
    shown: dict[str, Any] = {k: v for k, v in where.items() if v is not None}
    if subject is not None:
        shown["subject"] = subject
    if headers:
        shown["headers"] = dict(headers)
    shown["size"] = len(data)
    try:
        envelopes = decode_envelopes(data)
    except DeserializationError as exc:
        return {**shown, "error": str(exc), "head": data[:48].hex()}
    raw: Any = codec.decode(data)  # decoded above, so it decodes
    if raw["kind"] == BATCH:
        shown.update(kind=BATCH, id=raw["id"], sender=raw["sender"], recipient=raw["recipient"])
        shown["envelopes"] = [envelope_json(e) for e in envelopes]
    else:
        shown.update(envelope_json(envelopes[0]))
    expected = f"parley.p2p.{raw['recipient']}.{raw['sender']}"
    if subject is not None and subject != expected:
        shown["error"] = f"subject {subject!r} does not match the envelope ({expected!r})"
    return shown


def envelope_json(envelope: Envelope) -> dict[str, Any]:
    """An envelope with its body's fields by name, encoded fields decoded."""
    body = envelope.body
    fields: dict[str, Any] = {"type": _BY_TYPE[type(body)].name}
    for field in dataclasses.fields(body):
        value = getattr(body, field.name)
        if field.name in _ENCODED_FIELDS and isinstance(value, bytes):
            fields[field.name] = payload_json(value)
        else:
            fields[field.name] = value_json(value)
    return {
        "kind": envelope.kind,
        "id": envelope.id,
        "sender": envelope.sender,
        "recipient": envelope.recipient,
        "body": fields,
    }


def payload_json(data: bytes) -> Any:
    """A payload decoded; one that does not decode shows the reason, and its CBOR if any."""
    try:
        return value_json(codec.decode(data))
    except DeserializationError as exc:
        shown: dict[str, Any] = {"$undecodable": str(exc), "size": len(data)}
        try:
            shown["cbor"] = _generic_json(cbor2.loads(data))
        except Exception:
            shown["head"] = data[:48].hex()
        return shown


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def value_json(value: Any) -> Any:
    """A decoded value as JSON: whitelisted types named with ``$`` keys, nothing lost."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, list):
        return [value_json(item) for item in value]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: value_json(item) for key, item in value.items()}
        return {"$map": [[value_json(k), value_json(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"$tuple": [value_json(item) for item in value]}
    if isinstance(value, set | frozenset):
        items = sorted((value_json(item) for item in value), key=repr)
        return {"$frozenset" if isinstance(value, frozenset) else "$set": items}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime | date):
        return {"$datetime" if isinstance(value, datetime) else "$date": value.isoformat()}
    return _typed_json(value)


def _typed_json(value: Any) -> Any:
    cls = type(value)
    if cls.__module__ == "uuid" and cls.__qualname__ == "UUID":
        return {"$uuid": str(value)}
    registration = _BY_TYPE.get(cls)
    if isinstance(value, enum.Enum):
        name = registration.name if registration else type_name(cls)
        return {"$enum": name, "value": value_json(value.value)}
    if isinstance(value, BaseException):
        name = cls.__dict__.get("parley_name") or type_name(cls)
        extra = {k: v for k, v in vars(value).items() if not k.startswith("_")}
        return {
            "$exception": name,
            "args": value_json(list(value.args)),
            "fields": value_json(extra),
        }
    if registration is not None and dataclasses.is_dataclass(value):
        shown: dict[str, Any] = {"$object": registration.name}
        for field in registration.fields:
            shown[field] = value_json(getattr(value, field))
        return shown
    return {"$python": repr(value)}


def _generic_json(value: Any) -> Any:
    """Plain CBOR (a payload the codec refused): arrays, maps and tags by position."""
    if isinstance(value, list | tuple):  # cbor2 makes the arrays inside a tag tuples
        return [_generic_json(item) for item in value]
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return {key: _generic_json(item) for key, item in value.items()}
        return {"$map": [[_generic_json(k), _generic_json(v)] for k, v in value.items()]}
    if not isinstance(value, cbor2.CBORTag):
        return value_json(value)
    number, content = value.tag, _generic_json(value.value)
    if number in _TAG_NAMES:
        return {_TAG_NAMES[number]: content}
    if number == codec.TAG_OBJECT and isinstance(content, list) and content:
        return {"$object": content[0], "values": content[1:]}
    if number == codec.TAG_ENUM and isinstance(content, list) and len(content) == 2:
        return {"$enum": content[0], "value": content[1]}
    if number == codec.TAG_EXCEPTION and isinstance(content, list) and len(content) == 3:
        return {"$exception": content[0], "args": content[1], "fields": content[2]}
    return {"$tag": number, "value": content}


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


def _stream_messages(stream: str, url: str, limit: int) -> list[tuple[bytes, dict[str, Any]]]:
    try:
        return asyncio.run(_read_stream(stream, url, limit))
    except typer.BadParameter:
        raise
    except Exception as exc:
        typer.secho(f"error: cannot read stream {stream} at {url}: {exc!r}", err=True, fg="red")
        raise typer.Exit(2) from exc


async def _read_stream(stream: str, url: str, limit: int) -> list[tuple[bytes, dict[str, Any]]]:
    # Imported here, not at the top: `parley --help` should not pay for the NATS client.
    import nats  # noqa: PLC0415
    import nats.errors  # noqa: PLC0415
    import nats.js.errors  # noqa: PLC0415

    try:
        nc = await asyncio.wait_for(
            # The first connect retries by itself whatever allow_reconnect says: bound it.
            nats.connect(url, allow_reconnect=False, connect_timeout=2, name="parley-wire"),
            3,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise typer.BadParameter(f"no NATS server at {url}", param_hint="--nats") from exc
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError as exc:
            raise typer.BadParameter(f"no stream {stream} at {url}", param_hint="--stream") from exc
        found: list[tuple[bytes, dict[str, Any]]] = []
        seq = info.state.first_seq
        while seq <= info.state.last_seq and len(found) < limit:
            try:
                message = await js.get_msg(stream, seq=seq, next=True)
            except nats.js.errors.NotFoundError:
                break
            headers = dict(message.headers or {})
            where = {"stream_seq": message.seq, "subject": message.subject, "headers": headers}
            found.append((message.data or b"", where))
            seq = (message.seq or seq) + 1
        return found
    finally:
        await nc.close()


__all__ = ["describe", "envelope_json", "payload_json", "value_json", "wire_app"]
