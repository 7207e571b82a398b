"""``RpcClient``: the synchronous client, for scripts, tests and the command line.

::

    from parley.rpc import RpcClient

    with RpcClient("nats://127.0.0.1:4222", "alice", user="ops", password=secret) as rpc:
        handle = rpc.start_flow("parley.apps.pingpong:Ping", ["bob", 1], client_id="order-17")
        for update in handle.progress():
            print(update.kind, update.current)
        print(handle.result(timeout=30))

It runs an :class:`~parley.rpc.client.AsyncRpcClient` on an event loop of its own (one thread per
client); every method blocks until the node answered and raises what the async one raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Coroutine, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from parley.flows.logic import FlowLogic
from parley.rpc.client import AsyncFlowHandle, AsyncRpcClient
from parley.rpc.models import FlowOutcome, FlowRow, ProgressUpdate

__all__ = ["RpcClient", "RpcFlowHandle"]

T = TypeVar("T")
_END = object()


class RpcClient:
    """A blocking client of one node's RPC service (arguments as for ``AsyncRpcClient``)."""

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
        self.aio = AsyncRpcClient(
            url,
            node,
            user=user,
            password=password,
            timeout=timeout,
            connect_options=connect_options,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def node(self) -> str:
        return self.aio.node

    def connect(self) -> Self:
        """Connect (done by ``with``). Raises NodeUnreachable without a NATS server."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"parley-rpc-client-{self.node}", daemon=True
        )
        self._thread.start()
        try:
            self._run(self.aio.connect())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.aio.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the client is not connected: use it as a context manager")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # ---- flows ----------------------------------------------------------------------------------
    def call(self, operation: str, args: Mapping[str, object]) -> dict[str, Any]:
        return self._run(self.aio.call(operation, args))

    def start_flow(
        self,
        flow: str | type[FlowLogic[Any]] | FlowLogic[Any],
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        *,
        client_id: str | None = None,
        text: bool = False,
    ) -> RpcFlowHandle:
        """Start a flow; returns once it is durable (see ``AsyncRpcClient.start_flow``)."""
        started = self._run(self.aio.start_flow(flow, args, kwargs, client_id=client_id, text=text))
        return RpcFlowHandle(self, started)

    def reattach(self, client_id: str) -> RpcFlowHandle:
        return RpcFlowHandle(self, self._run(self.aio.reattach(client_id)))

    def handle(self, flow_id: str) -> RpcFlowHandle:
        return RpcFlowHandle(self, self.aio.handle(flow_id))

    def result(self, flow_id: str, timeout: float | None = None) -> Any:
        return self._run(self.aio.result(flow_id, timeout))

    def outcome(self, flow_id: str, timeout: float | None = None) -> FlowOutcome:
        return self._run(self.aio.outcome(flow_id, timeout))

    def track(self, flow_id: str) -> Generator[ProgressUpdate, None, None]:
        """The flow's progress: a snapshot, then every change, ending with the result."""
        return self._iterate(self.aio.track(flow_id))

    def list_flows(self, status: str | None = None, flow_class: str | None = None) -> list[FlowRow]:
        return self._run(self.aio.list_flows(status, flow_class))

    def watch_flows(
        self, status: str | None = None, flow_class: str | None = None
    ) -> Generator[list[FlowRow], None, None]:
        """The flow list now, then after every change (``close()`` it, or leave the loop)."""
        return self._iterate(self.aio.watch_flows(status, flow_class))

    def kill_flow(self, flow_id: str) -> None:
        self._run(self.aio.kill_flow(flow_id))

    def signal(self, flow_id: str, name: str, payload: object) -> None:
        self._run(self.aio.signal(flow_id, name, payload))

    def hospital_list(self) -> list[dict[str, Any]]:
        return self._run(self.aio.hospital_list())

    def hospital_show(self, flow_id: str) -> dict[str, Any]:
        return self._run(self.aio.hospital_show(flow_id))

    def hospital_retry(self, flow_id: str) -> None:
        self._run(self.aio.hospital_retry(flow_id))

    def hospital_kill(self, flow_id: str) -> None:
        self._run(self.aio.hospital_kill(flow_id))

    def stats(self) -> dict[str, Any]:
        return self._run(self.aio.stats())

    def drain(self) -> dict[str, Any]:
        return self._run(self.aio.drain())

    def undrain(self) -> dict[str, Any]:
        return self._run(self.aio.undrain())

    def _iterate(self, source: Any) -> Generator[Any, None, None]:
        """Items of an async iterator, pumped on the client's loop into this thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the client is not connected: use it as a context manager")
        items: queue.Queue[object] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in source:
                    items.put(item)
            except BaseException as exc:  # handed to the consumer, which raises it
                items.put(exc)
            finally:
                items.put(_END)

        return _drain(items, asyncio.run_coroutine_threadsafe(pump(), loop))


def _drain(items: queue.Queue[object], pump: Any) -> Generator[Any, None, None]:
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                if isinstance(item, asyncio.CancelledError):
                    return
                raise item
            yield item
    finally:
        pump.cancel()


class RpcFlowHandle:
    """A flow started (or found) through an :class:`RpcClient`."""

    def __init__(self, client: RpcClient, handle: AsyncFlowHandle) -> None:
        self._client = client
        self.flow_id = handle.flow_id
        self.client_id = handle.client_id
        self.flow = handle.flow

    def result(self, timeout: float | None = None) -> Any:
        """The flow's return value, waiting up to ``timeout`` seconds (raises its error)."""
        return self._client.result(self.flow_id, timeout)

    def outcome(self, timeout: float | None = None) -> FlowOutcome:
        return self._client.outcome(self.flow_id, timeout)

    def progress(self) -> Generator[ProgressUpdate, None, None]:
        """The current progress tree, then every change, ending with the result."""
        return self._client.track(self.flow_id)

    def kill(self) -> None:
        self._client.kill_flow(self.flow_id)

    def signal(self, name: str, payload: object) -> None:
        self._client.signal(self.flow_id, name, payload)

    def __repr__(self) -> str:
        return f"<RpcFlowHandle {self.flow_id}>"
