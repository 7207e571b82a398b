"""What the RPC service refuses, and how: credentials, permissions, flows, malformed requests;
and that the standard NATS service discovery finds it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest

from parley.protocol import codec
from parley.rpc import (
    BadArgument,
    BadRequest,
    NotAuthenticated,
    NotStartable,
    PermissionRefused,
    UnknownFlowClass,
)
from parley.rpc.messages import OPERATIONS, decode_reply, encode_request
from tests.rpc.nodes import PASSWORD, Nodes

pytestmark = pytest.mark.integration

WAIT = 10.0
STEPS = "tests.integration.apps:Steps"


def test_a_request_without_credentials_is_refused_and_starts_nothing(nodes: Nodes) -> None:
    with nodes.client(user=None, password=None) as rpc, pytest.raises(NotAuthenticated) as no:
        rpc.start_flow(STEPS, ["bob"])
    assert "carries no credentials" in str(no.value)
    assert nodes["alice"].flows() == []


def test_a_wrong_password_and_an_unknown_user_get_the_same_refusal(nodes: Nodes) -> None:
    messages = []
    for user, password in (("ops", "wrong"), ("nobody", PASSWORD)):
        with nodes.client(user=user, password=password) as rpc:
            with pytest.raises(NotAuthenticated) as refused:
                rpc.start_flow(STEPS, ["bob"])
            messages.append(str(refused.value).replace(user, "USER"))
    assert messages[0] == messages[1]
    assert nodes["alice"].flows() == []


def test_a_user_without_start_flow_of_the_class_is_refused_naming_the_permission(
    nodes: Nodes,
) -> None:
    with nodes.client(user="pinger") as rpc:
        with pytest.raises(PermissionRefused) as refused:
            rpc.start_flow(STEPS, ["bob"])
        assert refused.value.details["permission"] == f"StartFlow.{STEPS}"
        assert rpc.start_flow("Ping", ["bob", 1]).result(timeout=WAIT) == 2
    assert STEPS not in [row.flow_class for row in nodes["alice"].flows()]


def test_each_operation_needs_its_permission(nodes: Nodes) -> None:
    with nodes.client(user="pinger") as rpc:
        handle = rpc.start_flow("Ping", ["bob", 1])
        assert handle.result(timeout=WAIT) == 2  # its own flow: no ReadFlows needed
        for name, call in (
            ("ReadFlows", rpc.list_flows),
            ("KillFlow", lambda: rpc.kill_flow(handle.flow_id)),
            ("Signal", lambda: rpc.signal(handle.flow_id, "approve", "x")),
            ("Hospital", rpc.hospital_list),
            ("ReadFlows", rpc.stats),
        ):
            with pytest.raises(PermissionRefused) as refused:
                call()
            assert refused.value.details["permission"] == name
    with nodes.client(user="reader") as reader:
        assert reader.result(handle.flow_id, timeout=WAIT) == 2


def test_a_flow_not_startable_by_rpc_is_refused(nodes: Nodes) -> None:
    with nodes.client() as rpc, pytest.raises(NotStartable) as refused:
        rpc.start_flow("tests.integration.apps:NotForRpc")
    assert "@startable_by_rpc" in str(refused.value)
    assert nodes["alice"].flows() == []


def test_a_responder_named_by_its_class_name_is_not_startable(nodes: Nodes) -> None:
    with nodes.client() as rpc, pytest.raises(NotStartable):
        rpc.start_flow("Pong")


def test_an_unknown_flow_class_gets_suggestions(nodes: Nodes) -> None:
    with nodes.client() as rpc, pytest.raises(UnknownFlowClass) as refused:
        rpc.start_flow("tests.integration.apps:Step", ["bob"])
    assert refused.value.details["suggestions"][0] == STEPS


def test_typed_arguments_of_the_wrong_type_are_refused_before_the_flow_starts(
    nodes: Nodes,
) -> None:
    with nodes.client() as rpc:
        with pytest.raises(BadArgument) as refused:
            rpc.start_flow("Ping", ["bob", "1"])
        assert refused.value.details == {
            "flow": "parley.apps.pingpong:Ping",
            "parameter": "n",
            "expected": "int",
        }
        with pytest.raises(BadArgument, match="rounds must be at least 1"):
            rpc.start_flow("Ping", ["bob", 1, 0])
        with pytest.raises(BadArgument, match="too many positional arguments"):
            rpc.start_flow("Ping", ["bob", 1, 1, 1])
    assert nodes["alice"].flows() == []


def test_malformed_requests_get_structured_errors_and_the_service_goes_on(nodes: Nodes) -> None:
    async def main() -> list[Any]:
        connection = await nats.connect(nodes.url)
        try:
            answers = []
            for operation, data in (
                ("start_flow", b"\xff\x00 not cbor"),
                ("start_flow", codec.encode(["not", "a", "map"])),
                ("list_flows", codec.encode({"v": 99, "args": {}})),
                ("result", encode_request("ops", PASSWORD, {"flow_id": "not a flow id!"})),
                ("start_flow", encode_request("ops", PASSWORD, {"flow": "Ping", "args": "bob"})),
            ):
                subject = f"parley.rpc.alice.{operation}"
                reply = await connection.request(subject, data, timeout=WAIT)
                assert (reply.headers or {}).get("Nats-Service-Error-Code") == "400"
                answers.append(reply.data)
            return answers
        finally:
            await connection.close()

    for answer in asyncio.run(main()):
        with pytest.raises(BadRequest):
            decode_reply(answer)
    with nodes.client() as rpc:
        assert rpc.start_flow("Ping", ["bob", 1]).result(timeout=WAIT) == 2


def test_nats_service_discovery_lists_the_nodes_rpc_service(nodes: Nodes) -> None:
    async def main() -> tuple[list[Any], Any, Any]:
        connection = await nats.connect(nodes.url)
        try:
            inbox = connection.new_inbox()
            pings: asyncio.Queue[Any] = asyncio.Queue()

            async def collect(message: Any) -> None:
                await pings.put(json.loads(message.data))

            await connection.subscribe(inbox, cb=collect)
            await connection.publish("$SRV.PING", b"", reply=inbox)
            found = [await asyncio.wait_for(pings.get(), WAIT) for _ in range(2)]
            info = await connection.request("$SRV.INFO.parley-alice", b"", timeout=WAIT)
            stats = await connection.request("$SRV.STATS.parley-alice", b"", timeout=WAIT)
            return found, json.loads(info.data), json.loads(stats.data)
        finally:
            await connection.close()

    with nodes.client() as rpc:
        rpc.list_flows()  # one request, to count
    found, info, stats = asyncio.run(main())
    assert sorted(p["name"] for p in found) == ["parley-alice", "parley-bob"]
    assert info["metadata"]["node"] == "alice"
    assert [e["subject"] for e in info["endpoints"]] == [
        f"parley.rpc.alice.{operation}" for operation in OPERATIONS
    ]
    listed = next(e for e in stats["endpoints"] if e["name"] == "list_flows")
    assert listed["num_requests"] == 1
