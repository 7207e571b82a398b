"""A node's RPC service: nats.micro endpoints on ``parley.rpc.<node>.<operation>``.

Rules:

* The service is a nats.micro service named ``parley-<node>``
  (:func:`~parley.transport.security.rpc_service_name`, the name the node's NATS permissions
  allow), so ``nats micro ls`` and every ``$SRV.PING/INFO/STATS`` request find it; there is no
  discovery of our own.
* It has a NATS connection, an event loop and a thread of its own (like the map's watch): a burst
  of requests never slows the node's message path, and the node's flows never wait for it.
* An endpoint's handler only starts a task for the request, so a request that waits (a result, a
  durable start) never holds up the ones behind it. Every request gets exactly one reply: its
  result, or a structured error (``parley.rpc.errors``); a bad request never stops the service.
* Feed events from the flows' threads go through one queue to one sender task, which keeps their
  order.
* It starts after the node restored its flows and stops before the node does; requests still
  waiting then are answered ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any, Final

import nats
import nats.micro
from nats.micro.request import Request as MicroRequest

from parley.protocol.errors import ParleyError
from parley.rpc.errors import InternalError, NodeUnavailable, RpcError
from parley.rpc.messages import (
    OPERATIONS,
    decode_request,
    error_reply,
    ok_reply,
    rpc_subject,
)
from parley.rpc.operations import NodeApi, Operations
from parley.rpc.users import Authenticator, RpcUser
from parley.transport.names import server_urls
from parley.transport.security import rpc_service_name

__all__ = ["RpcService", "RpcServiceError"]

log = logging.getLogger("parley.rpc")

#: Threads for the node's blocking methods (scrypt has two of its own).
POOL_THREADS: Final = 4
#: Seconds the stop waits for requests in flight before answering them ``unavailable``.
STOP_GRACE: Final = 1.0


class RpcServiceError(ParleyError):
    """The RPC service could not start (NATS out of reach, or it refused the subscriptions)."""


def _service_version() -> str:
    try:
        return dist_version("parley-flows")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0"


class RpcService:
    """The RPC service of one node (see the module docstring).

    Args:
        node: the node it serves.
        name: the node's name.
        url: the NATS server, or several separated by commas (a cluster's).
        users: who may call it (none: every request is refused).
        connect_options: more keyword arguments for ``nats.connect`` (the node's credentials,
            TLS, its inbox prefix).
        connect_timeout: seconds to wait for NATS at start.
    """

    def __init__(
        self,
        node: NodeApi,
        name: str,
        url: str,
        users: Iterable[RpcUser],
        *,
        connect_options: Mapping[str, Any] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.url = url
        self._servers = server_urls(url)
        self.service_name = rpc_service_name(name)
        self._options = dict(connect_options or {})
        self._connect_timeout = connect_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"parley-rpc-{name}", daemon=True
        )
        self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix=f"parley-rpc-{name}")
        self._auth_pool = ThreadPoolExecutor(2, thread_name_prefix=f"parley-rpc-auth-{name}")
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.operations = Operations(
            node, name, Authenticator(users), self._pool, self.publish, auth_pool=self._auth_pool
        )
        self._nc: Any = None
        self._service: Any = None
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Requests answered, and those answered with an error.
        self.requests = 0
        self.errors = 0

    @property
    def id(self) -> str | None:
        """The nats.micro instance id (``$SRV.INFO.parley-<node>.<id>``), once started."""
        return self._service.id if self._service is not None else None

    @property
    def pending(self) -> int:
        """Requests being answered now (those waiting for a flow among them)."""
        return len(self._tasks)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> RpcService:
        """Connect and serve; returns once every endpoint is subscribed.

        Raises:
            RpcServiceError: NATS is out of reach, or the service could not be registered.
        """
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._begin(), self._loop)
        try:
            future.result(self._connect_timeout + 10)
        except Exception as exc:
            self.stop()
            raise RpcServiceError(
                f"the RPC service of node {self.name} could not start on {self.url}: {exc}"
            ) from exc
        log.info("RPC service %s serving parley.rpc.%s.*", self.service_name, self.name)
        return self

    async def _begin(self) -> None:
        async def error_cb(exc: Exception) -> None:
            log.warning("RPC service %s: NATS error: %s", self.name, exc)

        options: dict[str, Any] = {
            "name": f"parley-rpc-{self.name}",
            "connect_timeout": self._connect_timeout,
            "max_reconnect_attempts": -1,
            "error_cb": error_cb,
        }
        options.update(self._options)
        self._nc = await nats.connect(self._servers, **options)
        self._sender = asyncio.get_running_loop().create_task(self._send())
        self._service = await nats.micro.add_service(
            self._nc,
            name=self.service_name,
            version=_service_version(),
            description=f"Parley node {self.name}: start, watch and operate its flows",
            metadata={"node": self.name, "protocol": "1", "docs": "docs/rpc.md"},
        )
        for operation in OPERATIONS:
            await self._service.add_endpoint(
                name=operation,
                subject=rpc_subject(self.name, operation),
                handler=self._handler(operation),
                metadata={"operation": operation},
            )
        await self._nc.flush()

    def stop(self) -> None:
        """Stop serving: requests still waiting are answered ``unavailable``; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._end(), self._loop)
            try:
                future.result(15)
            except Exception as exc:
                log.warning("RPC service %s did not stop cleanly: %r", self.name, exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._auth_pool.shutdown(wait=False, cancel_futures=True)

    async def _end(self) -> None:
        self.operations.watch.stop()
        self.operations.feeds.close()
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._sender is not None:
            if not self._outbox.empty():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox.join(), STOP_GRACE)
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    # ---- requests -----------------------------------------------------------------------------
    def _handler(self, operation: str) -> Callable[[MicroRequest], Awaitable[None]]:
        method = self.operations.table[operation]

        async def handle(request: MicroRequest) -> None:
            task = asyncio.get_running_loop().create_task(self._serve(operation, method, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handle

    async def _serve(
        self, operation: str, method: Callable[..., Any], request: MicroRequest
    ) -> None:
        headers: dict[str, str] | None = None
        try:
            decoded = decode_request(request.data)
            user = await self.operations.authenticate(decoded)
            data = ok_reply(await method(user, decoded.args))
        except RpcError as exc:
            data, headers = error_reply(exc)
        except asyncio.CancelledError:
            data, headers = error_reply(NodeUnavailable(f"node {self.name} is stopping"))
            await self._respond(request, data, headers)
            raise
        except Exception as exc:
            log.exception("RPC %s on node %s failed", operation, self.name)
            data, headers = error_reply(
                InternalError(
                    f"node {self.name} failed to answer {operation}: {type(exc).__name__}: "
                    f"{exc} (the node's log has the traceback)"
                )
            )
        await self._respond(request, data, headers)

    async def _respond(
        self, request: MicroRequest, data: bytes, headers: dict[str, str] | None
    ) -> None:
        self.requests += 1
        if headers is not None:
            self.errors += 1
        try:
            await request.respond(data, headers=headers)
        except ValueError:  # published without a reply subject: nobody to answer
            log.debug("an RPC request on %s had no reply subject", request.subject)
        except Exception as exc:
            log.warning("RPC reply on node %s not sent: %r", self.name, exc)

    # ---- feeds --------------------------------------------------------------------------------
    def publish(self, subject: str, data: bytes) -> None:
        """Queue a feed event (from any thread); dropped once the service stopped."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the service stopped
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, (subject, data))

    async def _send(self) -> None:
        while True:
            subject, data = await self._outbox.get()
            try:
                await self._nc.publish(subject, data)
            except Exception as exc:
                log.warning("feed event on %s not published: %r", subject, exc)
            finally:
                self._outbox.task_done()
