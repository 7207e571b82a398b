"""The wire schema (``docs/wire.cddl``) and the code agree: the spec can't drift from the wire.

Every golden fixture, a thousand generated messages and the real traffic of flows on a
MockNetwork validate against the schema, and every field, key, kind and tag the code writes is
named in it. A field added to a message class, a kind or a whitelisted type added to the codec,
without the schema saying so, fails here.

``parley wire decode`` (``parley.cli.wire``) is tested here too, on the same fixtures; its
``--stream`` is tested against a real server in ``tests/integration/test_js_counterparty.py``.

The validator is cddl-verifier (pure Python, RFC 8610 as updated by RFC 9682). pycddl (cddl-rs)
was tried first and can't do it: it applies a ``.cbor`` control inside an array to every item of
the array, checks only one branch of a type choice in an array's last member, accepts any tag
inside recursive choices (``[1, #6.999(1)]`` is a valid ``value`` to it) and does not anchor
``.regexp`` patterns.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cddl_verifier import Validator  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from parley import FlowException, FlowLogic, FlowSession, initiated_by, initiating_flow
from parley.apps.pingpong import Ping, PingAll
from parley.cli.wire import wire_app
from parley.protocol import codec, ids
from parley.protocol.codec_encoder import _ENCODERS
from parley.protocol.codec_registry import _BY_TYPE
from parley.protocol.errors import DeserializationError
from parley.protocol.messages import (
    BATCH,
    KINDS,
    MAX_BATCH,
    NODE_NAME,
    Confirm,
    Data,
    End,
    Envelope,
    Error,
    Init,
    Reject,
    SessionMessage,
    decode_envelopes,
    encode_batch,
    encode_envelope,
    is_node_name,
)
from parley.testing import MockNetwork, MockNode
from parley.testing.mock import MockFlowHandle
from tests.protocol.test_codec import containers, flow_errors, registered, scalars, values

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "docs" / "wire.cddl"
GOLDEN = ROOT / "tests" / "golden" / "data"

_BODY = re.compile(
    r'^([\w-]+)\s*=\s*#6\.40110\(\[\s*"([\w.]+)",(.*?)^\]\)', re.MULTILINE | re.DOTALL
)
_MEMBER = re.compile(r"^\s*(\w+):\s*([\w-]+)", re.MULTILINE)


class WireSchema:
    """``docs/wire.cddl``: validates documents against its rules, and reads its text."""

    def __init__(self, path: Path) -> None:
        self.text = path.read_text()
        self._validator = Validator(path)
        #: The members of each session message, by its registered name: (field, rule) pairs.
        self.bodies = {
            name: _MEMBER.findall(members) for _, name, members in _BODY.findall(self.text)
        }

    def validate(self, rule: str, data: bytes) -> None:
        """Fail the test, saying where and why, unless ``data`` is a ``rule``."""
        result = self._validator.validate(data, root_type=rule)
        assert result.valid, "\n".join(
            f"{d.path_text}: {d.message}" for d in result.diagnostics[:3]
        )

    def is_valid(self, rule: str, data: bytes) -> bool:
        return bool(self._validator.validate(data, root_type=rule).valid)

    def rule(self, name: str) -> str:
        """The text of rule ``name`` (up to the next blank line)."""
        found = re.search(rf"^{name}\s*=(.*?)(?:\n\n|\Z)", self.text, re.MULTILINE | re.DOTALL)
        assert found is not None, f"docs/wire.cddl has no rule {name}"
        return found.group(1)


schema = WireSchema(SCHEMA)


# --------------------------------------------------------------------------------------------
# Golden fixtures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((GOLDEN / "wire").glob("*.cbor")), ids=lambda p: p.stem)
def test_every_golden_wire_fixture_is_a_message_of_the_schema(path: Path) -> None:
    schema.validate("message", path.read_bytes())


@pytest.mark.parametrize("path", sorted((GOLDEN / "values").glob("*.cbor")), ids=lambda p: p.stem)
def test_every_golden_value_fixture_is_a_value_of_the_schema(path: Path) -> None:
    schema.validate("value", path.read_bytes())


def test_the_golden_fixtures_cover_every_kind_of_message() -> None:
    kinds = {cbor2.loads(p.read_bytes())["kind"] for p in (GOLDEN / "wire").glob("*.cbor")}
    assert kinds == {*KINDS.values(), BATCH}


# --------------------------------------------------------------------------------------------
# What the code writes is what the schema names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
def test_each_session_message_has_exactly_the_fields_the_schema_names(cls: type) -> None:
    name = _BY_TYPE[cls].name
    assert name in schema.bodies, f"docs/wire.cddl does not describe {name}"
    fields = [f.name for f in dataclasses.fields(cls)]
    assert [field for field, _ in schema.bodies[name]] == fields


def test_the_envelope_has_exactly_the_keys_the_schema_names() -> None:
    written = cbor2.loads(encode_envelope(Envelope("a:1", "alice", "bob", End("s", 1))))
    named = re.findall(r'^\s*"(\w+)":', schema.rule("header"), re.MULTILINE)
    assert [*named, "kind", "body"] == list(written)


def test_the_schema_names_every_kind_and_its_body() -> None:
    named = dict(re.findall(r'"kind": "(\w+)", "body": (\[?[\w-]+)', schema.text))
    expected = {kind: cls.__name__.lower() for cls, kind in KINDS.items()}
    assert named == {**expected, BATCH: "[1"}
    for cls in KINDS:
        rule = schema.rule(cls.__name__.lower())
        assert rule.startswith(f' #6.40110([\n  "{_BY_TYPE[cls].name}",'), rule


def test_the_schema_tags_are_the_codecs() -> None:
    found = re.findall(r"^([\w-]+) = #6\.(\d+)\(", schema.text, re.MULTILINE)
    tags = {name: int(tag) for name, tag in found}
    assert {name: tags[name] for name in CODEC_TAGS} == CODEC_TAGS


CODEC_TAGS = {
    "tuple": codec.TAG_TUPLE,
    "set": codec.TAG_SET,
    "frozenset": codec.TAG_FROZENSET,
    "datetime": codec.TAG_DATETIME,
    "date": codec.TAG_DATE,
    "decimal": codec.TAG_DECIMAL,
    "object": codec.TAG_OBJECT,
    "enum": codec.TAG_ENUM,
    "exception": codec.TAG_EXCEPTION,
    "uuid": 37,
}

#: The rule of the schema's ``value`` that describes each type the codec has an encoder for.
TYPE_RULES: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "integer",
    float: "float",
    str: "tstr",
    bytes: "bstr",
    list: "[* value]",
    dict: "{ * key => value }",
    tuple: "tuple",
    set: "set",
    frozenset: "frozenset",
    datetime: "datetime",
    date: "date",
    Decimal: "decimal",
}


def test_every_type_the_codec_encodes_is_a_value_of_the_schema() -> None:
    builtin = {
        cls
        for cls in list(_ENCODERS)
        if cls not in _BY_TYPE
        and not issubclass(cls, BaseException)
        and not (cls.__module__ == "uuid" and cls.__qualname__ == "UUID")
    }
    assert builtin == set(TYPE_RULES), "describe the codec's new type in docs/wire.cddl"
    value = schema.rule("value")
    for rule in [*TYPE_RULES.values(), "uuid", "object", "enum", "exception"]:
        assert rule in value, f"the value rule does not name {rule}"


def test_the_limits_and_names_are_the_codes() -> None:
    assert f"[1*{MAX_BATCH} encoded-envelope]" in schema.text
    (node_name,) = re.findall(r'^node-name = tstr \.regexp "([^"]*)"', schema.text, re.MULTILINE)
    assert node_name == NODE_NAME.pattern


def test_a_node_name_with_a_trailing_newline_is_refused() -> None:
    assert not is_node_name("alice\n")
    assert is_node_name("alice")


@pytest.mark.parametrize("name", [["alice"], {"alice": 1}, None, 7, b"alice"])
def test_a_node_name_that_is_not_a_string_is_refused(name: object) -> None:
    assert not is_node_name(name)


# --------------------------------------------------------------------------------------------
# The schema refuses what the code refuses
# --------------------------------------------------------------------------------------------


def raw_envelope(body: object, **header: object) -> bytes:
    envelope = {"v": 1, "id": "a:1", "sender": "alice", "recipient": "bob", "kind": "data"}
    return cbor2.dumps({**envelope, **header, "body": body})


def data_body(*values: object) -> cbor2.CBORTag:
    return cbor2.CBORTag(codec.TAG_OBJECT, ["p.Data", "s", 1, codec.encode(1), *values])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (raw_envelope(data_body(5)), "a field the schema does not name"),
        (raw_envelope(cbor2.CBORTag(codec.TAG_OBJECT, ["p.Data", "s", 1])), "a missing field"),
        (raw_envelope(cbor2.CBORTag(codec.TAG_OBJECT, ["p.Data", "s", 0, b"\x01"])), "seq 0"),
        (raw_envelope(data_body(), kind="end"), "a kind that is not its body's"),
        (raw_envelope(data_body(), v=2), "another envelope version"),
        (raw_envelope(data_body(), sender="al.ice"), "a name that is no subject token"),
        (raw_envelope(data_body(), sender="a" * 129), "a name too long"),
        (raw_envelope(data_body(), id=""), "an empty id"),
        (raw_envelope(data_body(), extra=1), "a key the schema does not name"),
        (raw_envelope([]), "a body that is no session message"),
        (raw_envelope([], kind="batch"), "an empty batch"),
        (raw_envelope([b"\x00"], kind="batch"), "a batch of garbage"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_schema_refuses_what_the_decoder_refuses(data: bytes, why: str) -> None:
    assert not schema.is_valid("message", data), why
    with pytest.raises(DeserializationError):
        decode_envelopes(data)


@pytest.mark.parametrize(
    "payload", [b"\xff", b"\xd8\x20\x60", b"\x01\x02"], ids=["garbage", "tag 32", "trailing"]
)
def test_a_payload_that_is_not_one_whitelisted_document_is_refused(payload: bytes) -> None:
    # The node decodes payloads only when the flow receives them (it then gets
    # UnexpectedPayloadError); the schema refuses the message outright.
    assert not schema.is_valid("message", raw_envelope(data_body_with(payload)))
    with pytest.raises(DeserializationError):
        codec.decode(payload)


def data_body_with(payload: bytes) -> cbor2.CBORTag:
    return cbor2.CBORTag(codec.TAG_OBJECT, ["p.Data", "s", 1, payload])


def test_an_error_whose_exception_is_not_an_exception_is_refused() -> None:
    body = cbor2.CBORTag(codec.TAG_OBJECT, ["p.Error", "s", 1, "f:e0", codec.encode("text")])
    assert not schema.is_valid("message", raw_envelope(body, kind="error"))


# --------------------------------------------------------------------------------------------
# A thousand generated messages
# --------------------------------------------------------------------------------------------

flow_ids = st.from_regex(r"\A[0-9a-f]{32}\Z")
session_ids = st.builds(lambda f, n: f"{f}.{n}", flow_ids, st.integers(0, 20))
node_names = st.from_regex(NODE_NAME, fullmatch=True)
seqs = st.integers(1, 2**32)
versions = st.integers(1, 2**31)
#: Smaller than test_codec's values (the validator is pure Python), with every kind in reach.
small_values = st.recursive(scalars | registered, containers, max_leaves=6)
payloads = small_values.map(codec.encode)
error_ids = st.one_of(
    st.builds(ids.error_id, flow_ids, st.integers(0, 5)),
    st.builds(ids.reject_id, session_ids),
    st.builds(ids.violation_id, session_ids),
)
flow_classes = st.sampled_from(["parley.apps.pingpong:Ping", "tests.golden.flows:Asker", "m:A.B"])
bodies: st.SearchStrategy[SessionMessage] = st.one_of(
    st.builds(Init, session_ids, flow_classes, versions, st.text(), st.none() | payloads),
    st.builds(Confirm, session_ids, session_ids, versions, st.text()),
    st.builds(Data, session_ids, seqs, payloads),
    st.builds(Error, session_ids, seqs, error_ids, st.none() | flow_errors.map(codec.encode)),
    st.builds(Reject, session_ids, error_ids, st.text()),
    st.builds(End, session_ids, seqs),
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    sender, recipient = draw(node_names), draw(node_names)
    envelopes = [
        Envelope(ids.message_id(draw(session_ids), i), sender, recipient, body)
        for i, body in enumerate(draw(st.lists(bodies, min_size=1, max_size=3)))
    ]
    if len(envelopes) == 1 and draw(st.booleans()):
        return encode_envelope(envelopes[0])
    return encode_batch(envelopes)[1]


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_a_thousand_generated_messages_validate(data: bytes) -> None:
    assert decode_envelopes(data), "the generator makes real messages"
    schema.validate("message", data)


# --------------------------------------------------------------------------------------------
# Real traffic: flows on a MockNetwork, every message as it was delivered
# --------------------------------------------------------------------------------------------


class Refused(FlowException):
    """A FlowException with a declared field, carried to the counterparty."""

    limit: int

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


@initiating_flow
class Ask(FlowLogic[object]):
    def __init__(self, peer: str, value: object, fail: str) -> None:
        self.peer, self.value, self.fail = peer, value, fail

    async def call(self) -> object:
        session = self.initiate_flow(self.peer)
        await session.send(self.value)
        if self.fail == "initiator":
            raise Refused("no", 3)
        return (await session.receive(object)).unwrap_unchecked()


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    def __init__(self, session: FlowSession) -> None:
        self.session = session

    async def call(self) -> None:
        value = (await self.session.receive(object)).unwrap_unchecked()
        if value == "fail":
            raise Refused("too much", 7)
        if value == "crash":
            raise RuntimeError("hidden from the peer")
        await self.session.send([value, value])


def capture(*nodes: MockNode) -> list[bytes]:
    """Record every message the nodes receive, as the bytes that travelled."""
    seen: list[bytes] = []
    for node in nodes:
        receive = node.runtime.receive

        def recording(data: bytes, delivery: object, receive: Any = receive) -> Envelope | None:
            seen.append(data)
            envelope: Envelope | None = receive(data, delivery)
            return envelope

        setattr(node.runtime, "receive", recording)  # noqa: B010 - a method, replaced on purpose
    return seen


def run_traffic(value: object, n: int, rounds: int, fail: str) -> list[bytes]:
    net = MockNetwork()
    alice, bob, carol = (net.create_node(name) for name in ("alice", "bob", "carol"))
    carol.registry.unregister(Ask)
    seen = capture(alice, bob, carol)
    handles: list[MockFlowHandle[Any]] = [
        alice.start_flow(Ping("bob", n, rounds)),
        alice.start_flow(PingAll(["bob", "carol"], n)),
        alice.start_flow(Ask("bob", "fail" if fail == "responder" else value, fail)),
        alice.start_flow(Ask("bob", "crash", "")),
        alice.start_flow(Ask("carol", value, "")),  # rejected: carol runs no responder
    ]
    net.run_network()
    assert all(h.done for h in handles)
    return seen


@settings(max_examples=25, deadline=None)
@given(
    value=values,
    n=st.integers(-(2**70), 2**70),
    rounds=st.integers(1, 4),
    fail=st.sampled_from(["", "initiator", "responder"]),
)
def test_real_traffic_validates_and_uses_the_documented_ids(
    value: object, n: int, rounds: int, fail: str
) -> None:
    seen = run_traffic(value, n, rounds, fail)
    kinds = set()
    for data in seen:
        schema.validate("message", data)
        for envelope in decode_envelopes(data):
            kinds.add(envelope.kind)
            check_ids(envelope)
    assert kinds >= {"init", "confirm", "data", "error", "reject", "end"}


def check_ids(envelope: Envelope) -> None:
    """The ids Parley made follow docs/wire.md, "Ids"."""
    body = envelope.body
    if isinstance(body, Reject):
        assert envelope.id == body.error_id == ids.reject_id(body.session)
        return
    sender_session, _, number = envelope.id.rpartition(":")
    assert number == str(getattr(body, "seq", 0))
    sessions = [sender_session, body.session if not isinstance(body, Init) else sender_session]
    if isinstance(body, Init):
        assert body.initiator_session == sender_session
        assert body.app == body.flow_class.partition(":")[0]
    if isinstance(body, Confirm):
        assert body.initiated_session == sender_session
    for session in sessions:
        schema.validate("parley-session-id", cbor2.dumps(session))
    if isinstance(body, Error):
        assert re.fullmatch(r"[0-9a-f]{32}:e[0-9]+", body.error_id), body.error_id


# --------------------------------------------------------------------------------------------
# `parley wire decode`
# --------------------------------------------------------------------------------------------

runner = CliRunner()


def decoded(*args: str) -> tuple[int, list[dict[str, Any]]]:
    """Run ``parley wire decode --compact ARGS``: its exit code and the messages it printed."""
    result = runner.invoke(wire_app, ["decode", "--compact", *args])
    return result.exit_code, [json.loads(line) for line in result.output.splitlines()]


def test_wire_decode_shows_every_kind_of_message_by_field_name() -> None:
    paths = sorted((GOLDEN / "wire").glob("*.cbor"))
    code, shown = decoded(*map(str, paths), "--app", "tests.golden.flows")
    assert code == 0
    by_name = {Path(m["source"]).stem: m for m in shown}
    assert by_name["init"]["body"] == {
        "type": "p.Init",
        "initiator_session": "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0.0",
        "flow_class": "tests.golden.flows:Asker",
        "flow_version": 2,
        "app": "tests.golden.flows",
        "first_payload": "hi",
    }
    assert by_name["confirm"]["body"]["initiated_session"] == "9a3bd00d9a3bd00d9a3bd00d9a3bd00d.0"
    assert by_name["data"]["body"]["payload"] == {
        "$object": "golden.Quote",
        "item": "w",
        "price": {"$decimal": "1.5"},
        "tags": {"$frozenset": ["a"]},
    }
    assert by_name["error"]["body"]["exception"] == {
        "$exception": "tests.golden.flows:Refused",
        "args": ["too expensive"],
        "fields": {"code": 7, "peer": None, "error_id": None},
    }
    assert by_name["error_hidden"]["body"]["exception"] is None
    assert by_name["reject"]["body"]["reason"] == "Don't know X"
    assert by_name["end"]["body"] == {
        "type": "p.End",
        "session": "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0.0",
        "seq": 4,
    }
    batch = by_name["batch"]
    assert (batch["kind"], [e["kind"] for e in batch["envelopes"]]) == (
        "batch",
        ["confirm", "data", "end"],
    )


def test_wire_decode_shows_a_payload_of_an_unloaded_type_by_position_with_the_reason() -> None:
    data = encode_envelope(
        Envelope("a:1", "alice", "bob", Data("s", 1, cbor2.dumps(cbor2.CBORTag(40110, ["x:Y", 1]))))
    )
    code, (shown,) = decoded("--hex", data.hex())
    assert code == 0
    assert shown["body"]["payload"] == {
        "$undecodable": "type 'x:Y' is not registered with @serializable",
        "size": 9,
        "cbor": {"$object": "x:Y", "values": [1]},
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\x00", "malformed CBOR"),
        (b"", "malformed CBOR"),
        (cbor2.dumps({"v": 1}), "must be a non-empty string"),
        (raw_envelope(data_body(), v=2), "unsupported envelope version 2"),
        (raw_envelope(data_body(), sender="al.ice"), "is not a node name"),
        (raw_envelope(data_body(), kind="end"), "does not match body"),
        (cbor2.dumps(cbor2.CBORTag(999, 1)), "CBOR tag 999 is not allowed"),
    ],
)
def test_wire_decode_refuses_garbage_with_the_reason(data: bytes, reason: str) -> None:
    code, (shown,) = decoded("--base64", base64.b64encode(data).decode())
    assert code == 1
    assert reason in shown["error"]
    assert shown["size"] == len(data)


def test_wire_decode_checks_the_subject_against_the_envelope() -> None:
    data = (GOLDEN / "wire" / "end.cbor").read_bytes()
    assert decoded("--hex", data.hex(), "--subject", "parley.p2p.alice.bob")[0] == 0
    code, (shown,) = decoded("--hex", data.hex(), "--subject", "parley.p2p.bob.alice")
    assert code == 1
    assert "does not match the envelope" in shown["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give files, --hex, --base64 or --stream"),
        (["--hex", "zz"], "not hexadecimal"),
        (["--base64", "!!"], "not base64"),
        (["/no/such/file"], "cannot read /no/such/file"),
        (["--hex", "00", "--app", "no.such.module"], "cannot import no.such.module"),
        (["--stream", "PARLEY_x", "--nats", "nats://127.0.0.1:1"], "no NATS server"),
    ],
)
def test_wire_decode_refuses_bad_arguments_clearly(args: list[str], message: str) -> None:
    result = runner.invoke(wire_app, ["decode", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
