"""One record per flow: everything a runtime keeps about a flow, in one object.

A :class:`FlowRecord` holds a flow's live driver (its incarnation in memory), the handle a client
holds, and the bookkeeping of its messages in flight: the deliveries consumed since its last commit
(re-delivered if it is retried), the publishes not yet acknowledged (its next commit waits for
them) and the first publish error among them. A flow that finished keeps its record while its final
commit (the deletion of its checkpoint) is outstanding: ``retiring``.

:class:`FlowTable` owns the records. A record exists while any of that is true; once nothing is
left (:attr:`FlowRecord.unused`), the table forgets it. So removing, passivating or restoring a flow
changes one object instead of a set of maps that each must be cleaned, and the number of flows in
memory is counted in one place.

(A passivated flow with no handle and nothing in flight has no record at all: its checkpoint is
all there is.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from parley.protocol.events import SessionMessageDelivered

if TYPE_CHECKING:
    from parley.engine.driver import FlowDriver
    from parley.engine.handles import FlowHandle


class FlowRecord:
    """Everything the runtime keeps about one flow; see the module docstring."""

    __slots__ = (
        "deferred_commit",
        "driver",
        "flow_id",
        "handle",
        "publish_error",
        "publishing",
        "retiring",
        "uncommitted",
    )

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        #: The flow's incarnation in memory (``None``: passivated, finished or never loaded).
        self.driver: FlowDriver | None = None
        #: The handle a client holds (kept while the flow is passivated).
        self.handle: FlowHandle[Any] | None = None
        #: Messages delivered since the last commit: re-delivered if the flow is retried.
        self.uncommitted: list[SessionMessageDelivered] = []
        #: Publishes not acknowledged yet; the flow's next commit waits for them.
        self.publishing = 0
        #: The first publish that failed since the last commit.
        self.publish_error: BaseException | None = None
        #: The commit waiting for the publishes.
        self.deferred_commit: Callable[[], None] | None = None
        #: The finished driver whose final commit (deleting its checkpoint) is outstanding.
        self.retiring: FlowDriver | None = None

    @property
    def unused(self) -> bool:
        """Nothing is left to keep: no driver, handle, publish or final commit outstanding."""
        return (
            self.driver is None
            and self.handle is None
            and self.retiring is None
            and self.publishing == 0
            and self.deferred_commit is None
        )

    def __repr__(self) -> str:
        state = "live" if self.driver else "retiring" if self.retiring else "parked"
        return f"<FlowRecord {self.flow_id} {state}>"


class FlowTable:
    """The records of a runtime's flows, and how many of those flows are in memory."""

    __slots__ = ("_live", "_records")

    def __init__(self) -> None:
        self._records: dict[str, FlowRecord] = {}
        self._live = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def live(self) -> int:
        """How many flows have a driver in memory."""
        return self._live

    def get(self, flow_id: str) -> FlowRecord | None:
        return self._records.get(flow_id)

    def record(self, flow_id: str) -> FlowRecord:
        """The flow's record, made if it has none (forgotten again once unused)."""
        record = self._records.get(flow_id)
        if record is None:
            record = self._records[flow_id] = FlowRecord(flow_id)
        return record

    def driver(self, flow_id: str) -> FlowDriver | None:
        """The flow's live driver, if it is in memory."""
        record = self._records.get(flow_id)
        return record.driver if record is not None else None

    def attach(self, driver: FlowDriver) -> FlowRecord:
        """Make ``driver`` the flow's live incarnation (replacing none: detach the old first)."""
        record = self.record(driver.flow_id)
        if record.driver is None:
            self._live += 1
        record.driver = driver
        return record

    def detach(self, record: FlowRecord) -> None:
        """The flow leaves memory: drop its driver and its uncommitted deliveries."""
        if record.driver is not None:
            record.driver = None
            self._live -= 1
        record.uncommitted = []
        self.forget_if_unused(record)

    def forget_if_unused(self, record: FlowRecord) -> None:
        if record.unused and self._records.get(record.flow_id) is record:
            del self._records[record.flow_id]

    def drivers(self) -> Iterator[FlowDriver]:
        """Every live driver."""
        for record in list(self._records.values()):
            if record.driver is not None:
                yield record.driver

    def records(self) -> Iterator[FlowRecord]:
        return iter(list(self._records.values()))


__all__ = ["FlowRecord", "FlowTable"]
