"""``AsyncRpcClient``: drive a node's RPC service from asyncio (``RpcClient`` wraps it for threads).

::

    async with AsyncRpcClient(url, "alice", user="ops", password=secret) as rpc:
        handle = await rpc.start_flow("parley.apps.pingpong:Ping", ["bob", 1], client_id="o-17")
        async for update in handle.progress():
            print(update.kind, update.current)
        print(await handle.result())

Rules:

* One NATS connection per client; every call is one request/reply with the client's credentials
  (``docs/rpc.md``). Refusals raise the :mod:`parley.rpc.errors` exception of their code; no
  service answering raises :class:`~parley.rpc.errors.NodeUnreachable`, naming the node and URL.
* Waiting for a result longer than a request may last asks again, so ``result(timeout=None)``
  waits for as long as it takes, also across a restart of the node (for a flow with a client id).
* A progress feed is subscribed *before* ``track`` is asked, so nothing falls between the
  snapshot and the events; a gap in the numbers, or silence for :data:`RETRACK_AFTER` seconds,
  asks ``track`` again (a node that restarted starts its feeds anew).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

import nats
import nats.errors

from parley.flows.logic import FlowLogic
from parley.protocol import codec
from parley.protocol.errors import CodecError, type_name
from parley.rpc.errors import NodeUnavailable, NodeUnreachable, RpcTimeout
from parley.rpc.messages import (
    decode_reply,
    encode_request,
    feed_subject,
    flows_feed_subject,
    row_matches,
    rpc_subject,
)
from parley.rpc.models import FlowOutcome, FlowRow, ProgressUpdate

__all__ = ["AsyncFlowHandle", "AsyncRpcClient"]

#: Seconds of silence on a progress feed after which the client asks for the tree again.
RETRACK_AFTER: Final = 15.0
#: The longest one ``result`` request waits on the node (the service's own bound).
_RESULT_SLICE: Final = 60.0
#: Seconds between renewals of a flow-list watch (the service's lease is 30 s).
_WATCH_RENEW: Final = 10.0


class AsyncRpcClient:
    """A connection to one node's RPC service.

    Args:
        url: the NATS server(s) the node uses.
        node: the node's name.
        user: the RPC user (a ``[[users]]`` entry of the node's ``parley.toml``).
        password: its password.
        timeout: seconds to wait for an answer to each request.
        connect_options: more keyword arguments for ``nats.connect`` (credentials, TLS).
    """

    def __init__(
        self,
        url: str,
        node: str,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url, self.node = url, node
        self.user, self._password = user, password
        self.timeout = timeout
        self._options = dict(connect_options or {})
        self._nc: Any = None

    async def connect(self) -> Self:
        """Connect to NATS.

        Raises:
            NodeUnreachable: no NATS server at the URL (the message says which and why).
        """
        errors: list[BaseException] = []

        async def collect(exc: Exception) -> None:  # instead of nats-py logging a traceback
            errors.append(exc)

        options: dict[str, Any] = {
            "connect_timeout": min(self.timeout, 5.0),
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.5,
            "error_cb": collect,
            "name": f"parley-rpc-client-{self.node}",
        }
        options.update(self._options)
        try:
            # one server or several separated by commas (host:port without nats:// works too)
            servers = [part.strip() for part in self.url.split(",") if part.strip()]
            self._nc = await nats.connect(servers or self.url, **options)
        except Exception as exc:
            reason = errors[-1] if errors else exc
            raise NodeUnreachable(
                f"can't reach NATS at {self.url} to talk to node {self.node}: "
                f"{reason or type(reason).__name__} (give the URL with --nats or PARLEY_NATS_URL)",
                url=self.url,
                node=self.node,
            ) from exc
        return self

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- the wire -------------------------------------------------------------------------------
    async def call(
        self, operation: str, args: Mapping[str, object], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """One request: the reply's ``result`` map (for operations this client has no method for).

        Raises:
            RpcError: the node refused (the subclass of the error's code), did not answer in
                time (:class:`RpcTimeout`), or no service answers (:class:`NodeUnreachable`).
        """
        if self._nc is None:
            raise NodeUnreachable("the client is not connected: use it as a context manager")
        wait = timeout if timeout is not None else self.timeout
        data = encode_request(self.user, self._password, args)
        subject = rpc_subject(self.node, operation)
        try:
            message = await self._nc.request(subject, data, timeout=wait)
        except nats.errors.NoRespondersError:
            raise NodeUnreachable(
                f"node {self.node} is not reachable through NATS at {self.url}: no RPC service "
                f"answers on {subject} (is the node running, with rpc on?)",
                url=self.url,
                node=self.node,
            ) from None
        except nats.errors.TimeoutError:
            raise RpcTimeout(
                f"node {self.node} did not answer {operation} within {wait:g} s ({self.url})"
            ) from None
        except nats.errors.ConnectionClosedError:
            raise NodeUnreachable(f"the connection to NATS at {self.url} is closed") from None
        return decode_reply(message.data)

    # ---- flows ----------------------------------------------------------------------------------
    async def start_flow(
        self,
        flow: str | type[FlowLogic[Any]] | FlowLogic[Any],
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        client_id: str | None = None,
        text: bool = False,
    ) -> AsyncFlowHandle:
        """Start a flow; returns once it is durable on the node.

        Args:
            flow: its class's name (``"module:Class"``, or ``"Class"`` when that is unique on
                the node), the class, or an instance (whose constructor arguments are sent).
            args: constructor arguments (values the codec can encode).
            kwargs: keyword arguments.
            client_id: makes the start idempotent: the same client id gives the same flow (and
                its result), also after a restart of the node.
            text: the arguments are text, to be converted by the constructor's annotations.
        """
        if isinstance(flow, FlowLogic):
            captured, captured_kw = flow._parley_args
            name = type_name(type(flow))
            args, kwargs = captured, {**captured_kw, **(kwargs or {})}
        else:
            name = flow if isinstance(flow, str) else type_name(flow)
        request: dict[str, object] = {
            "flow": name,
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "text": text,
        }
        if client_id is not None:
            request["client_id"] = client_id
        reply = await self.call("start_flow", request, timeout=max(self.timeout, 65.0))
        return AsyncFlowHandle(self, str(reply["flow_id"]), reply.get("client_id"), reply["flow"])

    async def reattach(self, client_id: str) -> AsyncFlowHandle:
        """The handle of the flow started with ``client_id`` (running or finished)."""
        reply = await self.call("reattach", {"client_id": client_id})
        return AsyncFlowHandle(self, str(reply["flow_id"]), client_id)

    def handle(self, flow_id: str) -> AsyncFlowHandle:
        """A handle on a flow by id (nothing is asked until it is used)."""
        return AsyncFlowHandle(self, flow_id, None)

    async def outcome(self, flow_id: str, timeout: float | None = None) -> FlowOutcome:
        """How the flow ended, waiting up to ``timeout`` seconds (``None``: as long as it takes).

        Raises:
            RpcTimeout: it has not ended within ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait = _RESULT_SLICE if left is None else min(left, _RESULT_SLICE)
            try:
                reply = await self.call(
                    "result", {"flow_id": flow_id, "timeout": wait}, timeout=wait + self.timeout
                )
                return FlowOutcome.from_wire(flow_id, reply)
            except RpcTimeout as exc:  # not finished within this slice
                if timeout is not None and left is not None and left <= _RESULT_SLICE:
                    raise RpcTimeout(
                        f"flow {flow_id} has not finished within {timeout:g} s", flow_id=flow_id
                    ) from exc
            except (NodeUnavailable, NodeUnreachable):  # a node restarting: ask again
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.5)

    async def result(self, flow_id: str, timeout: float | None = None) -> Any:
        """The flow's return value (raises its error; see :meth:`FlowOutcome.value`)."""
        return (await self.outcome(flow_id, timeout)).value()

    async def track(self, flow_id: str) -> AsyncIterator[ProgressUpdate]:
        """The flow's progress: a ``snapshot``, then every change, ending with ``result``."""
        if self._nc is None:
            raise NodeUnreachable("the client is not connected: use it as a context manager")
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def received(message: Any) -> None:
            queue.put_nowait(message.data)

        subscription = await self._nc.subscribe(feed_subject(self.node, flow_id), cb=received)
        try:
            snapshot = await self.call("track", {"flow_id": flow_id})
            seq = int(snapshot["seq"])
            yield ProgressUpdate.from_wire(snapshot, "snapshot")
            if snapshot.get("done"):
                return
            heard = time.monotonic()  # when the feed last moved on
            while True:
                silence = max(0.0, heard + RETRACK_AFTER - time.monotonic())
                try:
                    event: dict[str, Any] | None = _decode_event(
                        await asyncio.wait_for(queue.get(), silence)
                    )
                except (TimeoutError, CodecError):
                    event = None
                if event is not None and int(event["seq"]) <= seq:
                    continue  # in the snapshot already
                if event is None or int(event["seq"]) != seq + 1:  # silence or a gap
                    again = await self._retrack(flow_id)
                    heard = time.monotonic()
                    if again is None:
                        continue
                    seq = int(again["seq"])
                    yield ProgressUpdate.from_wire(again, "snapshot")
                    if again.get("done"):
                        return
                    continue
                seq, heard = int(event["seq"]), time.monotonic()
                update = ProgressUpdate.from_wire(event)
                yield update
                if update.kind == "result":
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _retrack(self, flow_id: str) -> dict[str, Any] | None:
        try:
            return await self.call("track", {"flow_id": flow_id})
        except (RpcTimeout, NodeUnavailable, NodeUnreachable):
            return None  # the node is away: try again after the next silence

    async def list_flows(
        self, status: str | None = None, flow_class: str | None = None
    ) -> list[FlowRow]:
        """The node's flows (running, hospitalized, finished with a client id)."""
        args = {k: v for k, v in (("status", status), ("flow_class", flow_class)) if v}
        reply = await self.call("list_flows", args)
        return [FlowRow.from_wire(row) for row in reply["flows"]]

    async def watch_flows(
        self, status: str | None = None, flow_class: str | None = None
    ) -> AsyncIterator[list[FlowRow]]:
        """The flow list now, then again after every change (until the caller stops)."""
        if self._nc is None:
            raise NodeUnreachable("the client is not connected: use it as a context manager")
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def received(message: Any) -> None:
            queue.put_nowait(message.data)

        subscription = await self._nc.subscribe(flows_feed_subject(self.node), cb=received)
        try:
            rows, seq = await self._watch()
            yield _filtered(rows, status, flow_class)
            renew = time.monotonic() + _WATCH_RENEW
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), max(0.0, renew - time.monotonic()))
                except TimeoutError:
                    data = None
                if data is None:  # renew the lease; the reply is the whole list again
                    rows, seq = await self._watch()
                    renew = time.monotonic() + _WATCH_RENEW
                    yield _filtered(rows, status, flow_class)
                    continue
                change = _decode_event(data)
                if int(change["seq"]) <= seq:
                    continue
                seq = int(change["seq"])
                for row in change["changed"]:
                    rows[str(row["flow_id"])] = row
                for flow_id in change["removed"]:
                    rows.pop(str(flow_id), None)
                yield _filtered(rows, status, flow_class)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _watch(self) -> tuple[dict[str, dict[str, Any]], int]:
        reply = await self.call("list_flows", {"watch": True})
        return {str(r["flow_id"]): r for r in reply["flows"]}, int(reply["seq"])

    async def kill_flow(self, flow_id: str) -> None:
        """Kill a flow: it ends with KilledFlowException and its counterparties are told."""
        await self.call("kill_flow", {"flow_id": flow_id})

    async def signal(self, flow_id: str, name: str, payload: object) -> None:
        """Send the signal ``name`` to a flow; returns once the node stored it.

        Raises:
            Refused: the flow waits for ``name`` with another type (it keeps waiting).
        """
        await self.call("signal", {"flow_id": flow_id, "name": name, "payload": payload})

    # ---- the hospital ---------------------------------------------------------------------------
    async def hospital_list(self) -> list[dict[str, Any]]:
        """The flows kept for observation, each with its latest admission."""
        return list((await self.call("hospital_list", {}))["flows"])

    async def hospital_show(self, flow_id: str) -> dict[str, Any]:
        """A flow's summary and its admissions (with tracebacks)."""
        return await self.call("hospital_show", {"flow_id": flow_id})

    async def hospital_retry(self, flow_id: str) -> None:
        await self.call("hospital_retry", {"flow_id": flow_id})

    async def hospital_kill(self, flow_id: str) -> None:
        await self.call("hospital_kill", {"flow_id": flow_id})

    async def stats(self) -> dict[str, Any]:
        """The node's counters."""
        return await self.call("stats", {})

    async def drain(self) -> dict[str, Any]:
        """Stop the node taking new work; running flows finish (``Node.drain``)."""
        return await self.call("drain", {})

    async def undrain(self) -> dict[str, Any]:
        """Let the node take new work again (``Node.undrain``)."""
        return await self.call("undrain", {})


class AsyncFlowHandle:
    """A flow started (or found) through an :class:`AsyncRpcClient`."""

    def __init__(
        self,
        client: AsyncRpcClient,
        flow_id: str,
        client_id: str | None,
        flow: str | None = None,
    ) -> None:
        self.client = client
        self.flow_id = flow_id
        self.client_id = client_id
        self.flow = flow

    async def result(self, timeout: float | None = None) -> Any:
        return await self.client.result(self.flow_id, timeout)

    async def outcome(self, timeout: float | None = None) -> FlowOutcome:
        return await self.client.outcome(self.flow_id, timeout)

    def progress(self) -> AsyncIterator[ProgressUpdate]:
        return self.client.track(self.flow_id)

    async def kill(self) -> None:
        await self.client.kill_flow(self.flow_id)

    async def signal(self, name: str, payload: object) -> None:
        await self.client.signal(self.flow_id, name, payload)

    def __repr__(self) -> str:
        return f"<AsyncFlowHandle {self.flow_id}>"


def _decode_event(data: bytes) -> dict[str, Any]:
    document = codec.decode(data)
    if not isinstance(document, dict) or "seq" not in document:
        raise CodecError("not a feed event")
    return document


def _filtered(
    rows: Mapping[str, Mapping[str, Any]], status: str | None, flow_class: str | None
) -> list[FlowRow]:
    status = status.upper() if status else None
    found = [FlowRow.from_wire(r) for r in rows.values() if row_matches(r, status, flow_class)]
    return sorted(found, key=lambda r: (r.created_at or 0.0, r.flow_id))
