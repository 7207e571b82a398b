"""What clients get back: flow rows, progress updates and flow outcomes (client side).

These are plain, frozen views of the reply documents of ``docs/rpc.md``; the values inside a
flow's outcome are decoded only when asked for (:meth:`FlowOutcome.value`), so a client that lacks
a class of the flow's app still reads everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from parley.protocol import codec
from parley.protocol.errors import CodecError
from parley.rpc.errors import RemoteFlowError

__all__ = ["FlowOutcome", "FlowRow", "ProgressRow", "ProgressUpdate"]


@dataclass(frozen=True)
class FlowRow:
    """One flow of ``list_flows``. Times are unix seconds; ``since`` is its last checkpoint."""

    flow_id: str
    flow_class: str | None
    status: str
    progress_step: str | None
    waiting_for: str | None
    client_id: str | None
    suspends: int | None
    created_at: float | None
    since: float | None

    @classmethod
    def from_wire(cls, row: Mapping[str, Any]) -> FlowRow:
        return cls(
            flow_id=str(row["flow_id"]),
            flow_class=row.get("flow_class"),
            status=str(row.get("status")),
            progress_step=row.get("progress_step"),
            waiting_for=row.get("waiting_for"),
            client_id=row.get("client_id"),
            suspends=row.get("suspends"),
            created_at=row.get("created_at"),
            since=row.get("since"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProgressRow:
    """One step of a progress tree: its depth (0 for the flow's own steps, 1 for a sub-flow's
    under the step that runs it...), its label and whether it is the current step there."""

    level: int
    label: str
    current: bool


@dataclass(frozen=True)
class FlowOutcome:
    """How a flow ended: ``completed`` (with a value), ``failed`` or ``killed`` (with an error)."""

    flow_id: str
    status: str
    value_bytes: bytes | None = None
    value_text: str | None = None
    value_type: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_bytes: bytes | None = None

    @classmethod
    def from_wire(cls, flow_id: str, document: Mapping[str, Any]) -> FlowOutcome:
        error = document.get("error") or {}
        return cls(
            flow_id=flow_id,
            status=str(document.get("outcome")),
            value_bytes=document.get("value"),
            value_text=document.get("value_text"),
            value_type=document.get("value_type"),
            error_type=error.get("type"),
            error_message=error.get("message"),
            error_bytes=error.get("exception"),
        )

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def value(self) -> Any:
        """The flow's return value; raises the flow's error if it failed or was killed.

        Raises:
            BaseException: the flow's exception, rebuilt, or :class:`RemoteFlowError` when this
                process can't rebuild it.
            DeserializationError: the value is of a class this process does not have.
        """
        if not self.completed:
            raise self.error()
        if self.value_bytes is None:
            raise CodecError(
                f"the node could not encode the result of flow {self.flow_id}: {self.value_text}"
            )
        return codec.decode(self.value_bytes)

    def error(self) -> BaseException:
        """The flow's exception (rebuilt when this process knows its class)."""
        if self.error_bytes is not None:
            try:
                decoded = codec.decode(self.error_bytes)
            except CodecError:
                decoded = None
            if isinstance(decoded, BaseException):
                return decoded
        return RemoteFlowError(self.error_type or "?", self.error_message or "")


@dataclass(frozen=True)
class ProgressUpdate:
    """One message of a flow's progress feed.

    ``kind`` is ``snapshot`` (the first: the tree as it is), ``position`` (a step began),
    ``structure`` (a sub-flow's steps appeared), ``done``, ``error`` (the flow failed; ``error``
    says how) or ``result`` (the last: ``outcome``).
    """

    flow_id: str
    seq: int
    kind: str
    tree: tuple[ProgressRow, ...]
    step: str | None = None
    error: str | None = None
    outcome: FlowOutcome | None = None

    @classmethod
    def from_wire(cls, document: Mapping[str, Any], kind: str | None = None) -> ProgressUpdate:
        flow_id = str(document["flow_id"])
        kind = kind or str(document.get("kind"))
        done = kind == "result" or (kind == "snapshot" and document.get("done"))
        return cls(
            flow_id=flow_id,
            seq=int(document.get("seq", 0)),
            kind=kind,
            tree=tuple(ProgressRow(int(r[0]), str(r[1]), bool(r[2])) for r in document["tree"]),
            step=document.get("step"),
            error=document.get("error"),
            outcome=FlowOutcome.from_wire(flow_id, document) if done else None,
        )

    @property
    def current(self) -> str | None:
        """The path of labels to the deepest current step (``"Signing / Collecting"``)."""
        path: list[str] = []
        for row in self.tree:
            if row.level < len(path):  # past the subtree of the current step
                break
            if row.current and row.level == len(path):
                path.append(row.label)
        return " / ".join(path) or None
