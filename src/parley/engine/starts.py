"""Starting flows, and the handles clients follow them by.

:func:`start_flow` starts a flow object on a runtime. With a client id the start is idempotent:
the flow id derives from the client id, so a repeated start (the same class and arguments, or it is
refused) returns the flow that already holds it — in memory, restored from its checkpoint, or
finished, with the outcome stored for the client id. :func:`handle_of` and :func:`reattach` find
the handle of a flow of this node, also after a restart (a responder gets one when first asked).

These are functions of a :class:`~parley.engine.runtime.FlowRuntime`, which calls them from its
methods of the same names; a stored flow is brought back through its
:class:`~parley.engine.incarnations.Incarnations`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar

from parley.engine.driver import FlowDriver
from parley.engine.handles import FlowHandle, FlowLostError, client_flow_id
from parley.engine.records import FlowRecord
from parley.engine.restore import decoded_error
from parley.flows.logic import FlowLogic
from parley.flows.marks import frame_for
from parley.flows.progress import tracker_of
from parley.protocol import codec
from parley.protocol.errors import (
    ClientIdInUseError,
    DeserializationError,
    FlowUsageError,
    ParleyError,
    type_name,
)
from parley.protocol.events import DoRemainingWork
from parley.protocol.records import MAX_CLIENT_ID, PutFlowStart, StartKind
from parley.protocol.state import new_flow
from parley.store import SqliteStore

if TYPE_CHECKING:
    from parley.engine.runtime import FlowRuntime

T = TypeVar("T")
log = logging.getLogger("parley.runtime")


def start_flow(
    runtime: FlowRuntime,
    flow: FlowLogic[T],
    *,
    flow_id: str | None = None,
    client_id: str | None = None,
    started_by: str | None = None,
    handle: FlowHandle[T] | None = None,
) -> FlowHandle[T]:
    """Start ``flow``; with a ``client_id``, a repeated start returns the same flow.

    ``handle`` (without client id) is the handle the caller already gave out.
    """
    if not isinstance(flow, FlowLogic):
        raise FlowUsageError(f"start_flow() takes a FlowLogic, not {type(flow).__name__}")
    if client_id is not None and len(client_id) > MAX_CLIENT_ID:
        raise FlowUsageError(f"a client id may have at most {MAX_CLIENT_ID} characters")
    args, kwargs = flow._parley_args
    try:
        encoded = codec.encode((list(args), kwargs))
    except ParleyError as exc:
        raise FlowUsageError(
            f"the arguments of {type(flow).__qualname__} can't be checkpointed: {exc}"
        ) from exc
    if client_id is not None:
        flow_id = client_flow_id(client_id)
        existing = _attach(runtime, flow_id, client_id, type_name(type(flow)), encoded)
        if existing is not None:
            flow._parley_args = ((), {})  # this copy will never run
            return existing
    flow_id = flow_id or runtime.ports.uuid().replace("-", "")
    frame = frame_for(type(flow))
    start = PutFlowStart(flow_id, frame.flow_class, StartKind.RPC, encoded, started_by, client_id)
    state = new_flow(flow_id, runtime.identity, frame, start, client_id)
    driver = FlowDriver(runtime, state, flow)
    record = runtime.flows.attach(driver)
    record.handle = handle or FlowHandle(flow_id, tracker_of(flow))
    log.info("flow %s (%s) started", flow_id, frame.flow_class, extra={"flow_id": flow_id})
    driver.post(DoRemainingWork())
    return record.handle


def _attach(
    runtime: FlowRuntime, flow_id: str, client_id: str, flow_class: str, args: bytes
) -> FlowHandle[Any] | None:
    """The flow that already holds ``client_id``, if any (refused if it is another flow)."""
    record = runtime.flows.get(flow_id)
    if record is not None and record.handle is not None:
        _same_start(client_id, flow_id, _start_of(runtime.store, record), flow_class, args)
        return record.handle
    result = runtime.store.flow_result(client_id)
    if result is not None:
        started = (result.flow_class, result.args)
        _same_start(client_id, result.flow_id, started, flow_class, args)
        done: FlowHandle[Any] = FlowHandle(result.flow_id)
        if result.error is not None:
            done.future.set_exception(decoded_error(result.error))
        else:
            done.future.set_result(codec.decode(result.value) if result.value else None)
        done.started.set_result(None)
        return done
    stored = runtime.store.load_flow(flow_id)
    if stored is not None:
        started = (stored.flow_class, stored.args)
        _same_start(client_id, flow_id, started, flow_class, args)
        runtime.incarnations.restore(flow_id)
        record = runtime.flows.get(flow_id)
        return record.handle if record is not None else None
    return None


def handle_of(runtime: FlowRuntime, flow_id: str) -> FlowHandle[Any] | None:
    """The handle of a flow of this node, also after a restart.

    A flow started here (an RPC start or a client id) has had its handle since its start; a
    responder (started by a peer's session-init) is given one when first asked, so that its
    progress and its end can be followed while it runs. A flow in memory gives its handle; a
    stored one is restored first; a finished flow that had a client id gives a finished
    handle with its stored outcome. ``None``: no such flow (or one that finished without a
    client id, whose outcome was not kept).
    """
    record = runtime.flows.get(flow_id)
    if record is not None and record.handle is not None:
        return record.handle
    stored = runtime.store.load_flow(flow_id)
    if record is not None and record.driver is not None and record.retiring is None:
        return _follow(record, durable=stored is not None)
    if stored is not None and stored.kind is not StartKind.RPC:  # a passivated responder
        record = runtime.incarnations.live(flow_id)
        return _follow(record, durable=True) if record is not None else None
    if stored is not None:
        record = runtime.incarnations.live(flow_id)
        if record is not None and record.handle is not None:
            return record.handle
        if stored.client_id is None:
            return None
    client_id = stored.client_id if stored is not None else None
    client_id = client_id or runtime.store.client_id_of_result(flow_id)
    return finished(runtime.store, client_id) if client_id is not None else None


def _follow(record: FlowRecord, *, durable: bool) -> FlowHandle[Any] | None:
    """A handle for a live flow that has none (a responder); it ends with the flow."""
    if record.handle is not None or record.driver is None:
        return record.handle
    record.handle = FlowHandle(record.flow_id, tracker_of(record.driver.flow))
    if durable:
        record.handle.started.set_result(None)
    return record.handle


def reattach(runtime: FlowRuntime, client_id: str) -> FlowHandle[Any] | None:
    """The handle of the flow started with ``client_id`` (see :meth:`handle_of`)."""
    flow_id = client_flow_id(client_id)
    return runtime.handle_of(flow_id) or finished(runtime.store, client_id)


def finished(store: SqliteStore, client_id: str) -> FlowHandle[Any] | None:
    """A finished handle with the outcome stored for ``client_id`` (``None``: none is stored)."""
    result = store.flow_result(client_id)
    if result is None:
        return None
    done: FlowHandle[Any] = FlowHandle(result.flow_id)
    if result.error is not None:
        done.future.set_exception(decoded_error(result.error))
    else:
        done.future.set_result(codec.decode(result.value) if result.value else None)
    done.started.set_result(None)
    return done


def _start_of(store: SqliteStore, record: FlowRecord) -> tuple[str | None, bytes | None]:
    """The class and encoded arguments a flow was started with."""
    start = record.driver.initial_state.start_record if record.driver is not None else None
    if start is not None:  # not committed yet
        return start.flow_class, start.args
    stored = store.load_flow(record.flow_id)
    return (stored.flow_class, stored.args) if stored is not None else (None, None)


def _same_start(
    client_id: str,
    flow_id: str,
    started: tuple[str | None, bytes | None],
    flow_class: str,
    args: bytes,
) -> None:
    """Refuse a start that repeats ``client_id`` for another class or other arguments.

    Results stored by older versions have no arguments: only their class is compared.
    """
    existing_class, existing_args = started
    if existing_class is not None and existing_class != flow_class:
        raise ClientIdInUseError(client_id, flow_id, existing_class, f"class {existing_class}")
    if existing_args is None or existing_args == args:
        return
    try:
        same = codec.decode(existing_args) == codec.decode(args)
    except DeserializationError:
        same = False
    if not same:
        raise ClientIdInUseError(
            client_id, flow_id, existing_class or flow_class, "other arguments"
        )


def adopt_handles(runtime: FlowRuntime, handles: dict[str, FlowHandle[Any]]) -> None:
    """Take over the handles of flows this runtime restored (from a dead predecessor).

    A handle whose flow is not here (it finished, or can't be restored) is failed, so that no
    client waits forever.
    """
    for flow_id, handle in handles.items():
        record = runtime.flows.get(flow_id)
        if record is not None and record.driver is not None:
            record.handle = handle
        elif not handle.future.done():
            error = FlowLostError(
                f"flow {flow_id}'s worker failed and the flow could not be restored: "
                "see the node's log and its stored status"
            )
            if not handle.started.done():
                handle.started.set_exception(error)
            handle.future.set_exception(error)


__all__ = ["adopt_handles", "finished", "handle_of", "reattach", "start_flow"]
