"""What each RPC operation does on the node, once its request is decoded and its user known.

Rules:

* Each operation checks its permission before it touches anything (a refusal starts nothing);
  ``docs/rpc.md`` has the table. Reading a flow (``result``, ``track``, ``reattach``) needs
  ``ReadFlows``, except for the flows the user started itself: the service remembers who started
  what while it runs, and starting again with the same client id (the way to get a flow back after
  a restart) makes the user its starter again.
* The node's methods block (they ask its actors and wait), so they run on a small thread pool,
  never on the event loop; waiting for a flow (its durable start, its result) waits on its
  handle's futures without a thread.
* The node forgets a flow without a client id as soon as it ends, which may be before its
  starter asks for the result; the service therefore keeps the handles of the last
  :data:`KEPT_HANDLES` flows it started (finished ones are dropped oldest first). Outcomes that
  must survive a restart need a client id.
* A wait is bounded by :data:`MAX_WAIT` (nats-server lets a node answer a request for two minutes
  only): a client that wants to wait longer asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any, Final, Protocol, TypeVar

from parley.engine.handles import FlowHandle, client_flow_id
from parley.engine.hospital import Admission
from parley.flows.logic import FlowLogic
from parley.protocol.errors import (
    ClientIdInUseError,
    FlowUsageError,
    ParleyError,
    SerializationError,
    UnexpectedPayloadError,
    type_name,
)
from parley.protocol.records import FlowStatus
from parley.rpc.convert import build_flow, resolve_flow_class
from parley.rpc.errors import (
    BadArgument,
    BadRequest,
    ClientIdConflict,
    FlowNotFound,
    NodeUnavailable,
    Refused,
    RpcError,
    RpcTimeout,
)
from parley.rpc.feeds import FlowFeeds, FlowListWatch, Publish
from parley.rpc.messages import (
    OPERATIONS,
    Args,
    Request,
    admission_row,
    flows_feed_subject,
    outcome_of,
    row_matches,
    summary_row,
)
from parley.rpc.users import (
    ALL,
    HOSPITAL,
    KILL_FLOW,
    READ_FLOWS,
    SIGNAL,
    Authenticator,
    RpcUser,
    start_permission,
)
from parley.store import FlowSummary

__all__ = ["MAX_WAIT", "NodeApi", "Operations"]

T = TypeVar("T")
Result = dict[str, object]
#: The longest a request waits for a flow (seconds).
MAX_WAIT: Final = 60.0
#: Flows whose starter is remembered (the oldest are forgotten first).
_OWNERS: Final = 100_000
#: Handles of flows started here kept for their starters (finished ones dropped oldest first).
KEPT_HANDLES: Final = 10_000


class NodeApi(Protocol):
    """What the service uses of a node (``parley.node.Node``)."""

    def start_flow(
        self,
        flow: FlowLogic[Any],
        *,
        client_id: str | None = ...,
        started_by: str | None = ...,
        wait_started: bool = ...,
        timeout: float = ...,
    ) -> FlowHandle[Any]: ...

    def flow_handle(self, flow_id: str, timeout: float = ...) -> FlowHandle[Any] | None: ...

    def reattach(self, client_id: str, timeout: float = ...) -> FlowHandle[Any] | None: ...

    def flows(self, status: FlowStatus | None = ...) -> list[FlowSummary]: ...

    def kill_flow(self, flow_id: str, timeout: float = ...) -> bool: ...

    def signal(self, flow_id: str, name: str, payload: object, timeout: float = ...) -> None: ...

    def hospital_list(self) -> list[Admission]: ...

    def hospital_show(self, flow_id: str) -> list[Admission]: ...

    def hospital_retry(self, flow_id: str, timeout: float = ...) -> bool: ...

    def stats(self, timeout: float = ...) -> dict[str, int]: ...

    def drain(self) -> None: ...

    def undrain(self) -> None: ...

    def drained(self) -> bool: ...


class Operations:
    """The operations of one node's RPC service (called on the service's event loop).

    Args:
        node: the node.
        name: its name.
        users: who may call it.
        pool: threads for the node's blocking methods.
        publish: sends a feed event (thread-safe).
        auth_pool: threads for checking passwords (scrypt), apart from ``pool`` so that a flood
            of wrong passwords can't hold up the requests of users already let in.
    """

    def __init__(
        self,
        node: NodeApi,
        name: str,
        users: Authenticator,
        pool: Executor,
        publish: Publish,
        *,
        auth_pool: Executor | None = None,
    ) -> None:
        self.node = node
        self.auth_pool = auth_pool or pool
        self.name = name
        self.users = users
        self.pool = pool
        self.feeds = FlowFeeds(name, publish)
        self.watch = FlowListWatch(flows_feed_subject(name), self._all_rows, publish)
        self._owners: OrderedDict[str, set[str]] = OrderedDict()
        self._handles: OrderedDict[str, FlowHandle[Any]] = OrderedDict()
        self._done: weakref.WeakKeyDictionary[Future[Any], asyncio.Future[None]] = (
            weakref.WeakKeyDictionary()
        )
        #: Each operation's method: the method of the same name.
        self.table: dict[str, Callable[[RpcUser, Args], Any]] = {
            operation: getattr(self, operation) for operation in OPERATIONS
        }

    async def authenticate(self, request: Request) -> RpcUser:
        user = self.users.cached(request.user, request.password)
        if user is not None:
            return user
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.auth_pool, self.users.authenticate, request.user, request.password
        )

    # ---- flows --------------------------------------------------------------------------------
    async def start_flow(self, user: RpcUser, args: Args) -> Result:
        cls = resolve_flow_class(args.text("flow"), self.name)
        flow_class = type_name(cls)
        user.require(start_permission(flow_class), f"start {flow_class}")
        client_id = args.optional_text("client_id")
        flow = build_flow(
            cls, args.sequence("args"), args.mapping("kwargs"), text=args.flag("text")
        )
        handle = await self._call(
            self.node.start_flow,
            flow,
            client_id=client_id,
            started_by=user.name,
            wait_started=False,
        )
        self._own(user, handle.flow_id)
        self._keep(handle)
        if not await self._wait(handle.started, MAX_WAIT):
            raise RpcTimeout(f"flow {handle.flow_id} was not durable within {MAX_WAIT:.0f} s")
        return {
            "flow_id": handle.flow_id,
            "flow": flow_class,
            "client_id": client_id,
            "done": handle.done,
        }

    async def result(self, user: RpcUser, args: Args) -> Result:
        flow_id = args.flow_id()
        timeout = min(args.number("timeout", 30.0), MAX_WAIT)
        handle = await self._readable(user, flow_id)
        if not await self._wait(handle.future, timeout):
            raise RpcTimeout(
                f"flow {flow_id} has not finished within {timeout:g} s", flow_id=flow_id
            )
        return {"flow_id": flow_id, **outcome_of(handle.future)}

    async def reattach(self, user: RpcUser, args: Args) -> Result:
        client_id = args.text("client_id")
        flow_id = client_flow_id(client_id)
        if not self._owns(user, flow_id):
            user.require(READ_FLOWS, f"reattach to client id {client_id!r}")
        handle = await self._call(self.node.reattach, client_id)
        if handle is None:
            raise FlowNotFound(
                f"node {self.name} has no flow with client id {client_id!r}", client_id=client_id
            )
        return {"flow_id": handle.flow_id, "client_id": client_id, "done": handle.done}

    async def track(self, user: RpcUser, args: Args) -> Result:
        handle = await self._readable(user, args.flow_id())
        return self.feeds.track(handle)

    async def list_flows(self, user: RpcUser, args: Args) -> Result:
        user.require(READ_FLOWS, "list flows")
        status = args.optional_text("status")
        if status is not None:
            status = status.upper()
            if status not in FlowStatus.__members__:
                raise BadRequest(
                    f"unknown status {status!r}: use one of {', '.join(FlowStatus.__members__)}"
                )
        flow_class = args.optional_text("flow_class")
        if args.flag("watch"):
            seq, rows = await self.watch.watch()
            result: Result = {"seq": seq, "subject": self.watch.subject}
        else:
            summaries = await self._call(
                self.node.flows, FlowStatus(status) if status is not None else None
            )
            rows, result = [summary_row(s) for s in summaries], {}
        result["flows"] = [row for row in rows if row_matches(row, status, flow_class)]
        return result

    async def kill_flow(self, user: RpcUser, args: Args) -> Result:
        user.require(KILL_FLOW, "kill flows")
        flow_id = args.flow_id()
        if not await self._call(self.node.kill_flow, flow_id):
            raise FlowNotFound(f"node {self.name} runs no flow {flow_id}", flow_id=flow_id)
        return {"flow_id": flow_id, "killed": True}

    async def signal(self, user: RpcUser, args: Args) -> Result:
        user.require(SIGNAL, "send signals")
        flow_id, name = args.flow_id(), args.text("name")
        if len(name) > 128:
            raise BadRequest("a signal's name has at most 128 characters")
        await self._call(self.node.signal, flow_id, name, args.value("payload"))
        return {"flow_id": flow_id, "name": name, "stored": True}

    # ---- the hospital ---------------------------------------------------------------------------
    async def hospital_list(self, user: RpcUser, args: Args) -> Result:
        user.require(HOSPITAL, "look into the hospital")
        kept = await self._call(self.node.flows, FlowStatus.HOSPITALIZED)
        latest = {a.flow_id: a for a in await self._call(self.node.hospital_list)}
        flows = []
        for summary in kept:
            record = latest.get(summary.flow_id)
            row = summary_row(summary)
            row["admission"] = admission_row(record) if record is not None else None
            flows.append(row)
        return {"flows": flows}

    async def hospital_show(self, user: RpcUser, args: Args) -> Result:
        user.require(HOSPITAL, "look into the hospital")
        flow_id = args.flow_id()
        summaries = await self._call(self.node.flows)
        admissions = await self._call(self.node.hospital_show, flow_id)
        found = [s for s in summaries if s.flow_id == flow_id]
        visits = [admission_row(a, traceback=True) for a in admissions]
        if not found and not visits:
            raise FlowNotFound(f"node {self.name} knows no flow {flow_id}", flow_id=flow_id)
        return {"flow": summary_row(found[0]) if found else None, "admissions": visits}

    async def hospital_retry(self, user: RpcUser, args: Args) -> Result:
        user.require(HOSPITAL, "retry flows in the hospital")
        flow_id = args.flow_id()
        if not await self._call(self.node.hospital_retry, flow_id):
            raise FlowNotFound(self._not_kept(flow_id), flow_id=flow_id)
        return {"flow_id": flow_id, "retried": True}

    async def hospital_kill(self, user: RpcUser, args: Args) -> Result:
        user.require(HOSPITAL, "kill flows in the hospital")
        flow_id = args.flow_id()
        kept = await self._call(self.node.flows, FlowStatus.HOSPITALIZED)
        if not any(s.flow_id == flow_id for s in kept):
            raise FlowNotFound(self._not_kept(flow_id), flow_id=flow_id)
        if not await self._call(self.node.kill_flow, flow_id):
            raise FlowNotFound(self._not_kept(flow_id), flow_id=flow_id)
        return {"flow_id": flow_id, "killed": True}

    def _not_kept(self, flow_id: str) -> str:
        return f"node {self.name} keeps no flow {flow_id} for observation (see hospital list)"

    async def stats(self, user: RpcUser, args: Args) -> Result:
        user.require(READ_FLOWS, "read the node's statistics")
        counters = await self._call(self.node.stats)
        return {"node": self.name, "counters": counters, "tracked_flows": len(self.feeds)}

    async def drain(self, user: RpcUser, args: Args) -> Result:
        user.require(ALL, "drain the node")
        await self._call(self.node.drain)
        return {"node": self.name, "draining": True, "drained": await self._call(self.node.drained)}

    async def undrain(self, user: RpcUser, args: Args) -> Result:
        user.require(ALL, "undrain the node")
        await self._call(self.node.undrain)
        return {"node": self.name, "draining": False}

    # ---- helpers --------------------------------------------------------------------------------
    async def _readable(self, user: RpcUser, flow_id: str) -> FlowHandle[Any]:
        if not self._owns(user, flow_id):
            user.require(READ_FLOWS, f"read flow {flow_id}")
        handle = self._handles.get(flow_id) or await self._call(self.node.flow_handle, flow_id)
        if handle is None:
            raise FlowNotFound(
                f"node {self.name} has no flow {flow_id} to follow (a finished flow's outcome "
                "is kept only if it had a client id)",
                flow_id=flow_id,
            )
        return handle

    def _own(self, user: RpcUser, flow_id: str) -> None:
        owners = self._owners.setdefault(flow_id, set())
        owners.add(user.name)
        self._owners.move_to_end(flow_id)
        while len(self._owners) > _OWNERS:
            self._owners.popitem(last=False)

    def _keep(self, handle: FlowHandle[Any]) -> None:
        self._handles[handle.flow_id] = handle
        self._handles.move_to_end(handle.flow_id)
        if len(self._handles) > KEPT_HANDLES:
            for flow_id in [f for f, h in self._handles.items() if h.done][: KEPT_HANDLES // 10]:
                del self._handles[flow_id]

    def _owns(self, user: RpcUser, flow_id: str) -> bool:
        return user.name in self._owners.get(flow_id, ())

    async def _all_rows(self) -> dict[str, dict[str, object]]:
        summaries = await self._call(self.node.flows)
        return {s.flow_id: summary_row(s) for s in summaries}

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking node method on the pool; its refusals become RPC errors."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, partial(method, *args, **kwargs))
        except ClientIdInUseError as exc:
            raise ClientIdConflict(str(exc), client_id=exc.client_id, flow_id=exc.flow_id) from exc
        except UnexpectedPayloadError as exc:
            raise Refused(f"{exc} (the flow keeps waiting)") from exc
        except FlowUsageError as exc:
            if "no running flow" in str(exc):
                raise FlowNotFound(str(exc)) from exc
            raise Refused(str(exc)) from exc
        except SerializationError as exc:
            raise BadArgument(str(exc)) from exc
        except TimeoutError as exc:
            raise RpcTimeout(f"node {self.name} did not answer in time") from exc
        except RpcError:
            raise
        except ParleyError as exc:  # NodeError: not running, or stopping
            raise NodeUnavailable(f"node {self.name}: {exc}") from exc

    async def _wait(self, future: Future[Any], timeout: float) -> bool:
        """Whether ``future`` is done within ``timeout`` (giving up never cancels it)."""
        if future.done():
            return True
        waiter = self._done.get(future)
        if waiter is None:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._done[future] = waiter
            future.add_done_callback(partial(_wake, loop, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return future.done()
        return True


def _wake(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None], _: object) -> None:
    """Called on the thread that finished the future."""

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    with contextlib.suppress(RuntimeError):  # the service stopped: nobody waits any more
        loop.call_soon_threadsafe(wake)
