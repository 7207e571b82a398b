"""Progress tracking: a flow tells the world which step it is at.

A :class:`ProgressTracker` is a list of :class:`Step` s; a step may have a child tracker (a
sub-flow's tracker becomes the child of the parent's current step). Setting ``current_step``
notifies subscribers with a :class:`ProgressChange` — of the tracker itself and of every tracker
above it.

Declare the tracker as a class attribute; each flow *instance* gets its own copy::

    class Trade(FlowLogic[None]):
        PRICING = Step("Agreeing the price")
        SIGNING = Step("Signing")
        progress_tracker = ProgressTracker(PRICING, SIGNING)

        async def call(self) -> None:
            self.progress_tracker.current_step = self.PRICING
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

Callback = Callable[["ProgressChange"], None]


class Step:
    """One step of a flow's progress. Steps compare by identity; labels are for people."""

    __slots__ = ("child_factory", "label")

    def __init__(self, label: str, child: Callable[[], ProgressTracker] | None = None) -> None:
        self.label = label
        self.child_factory = child

    def __repr__(self) -> str:
        return f"Step({self.label!r})"


UNSTARTED = Step("Unstarted")
DONE = Step("Done")


@dataclass(frozen=True, slots=True)
class ProgressChange:
    """What changed: the position in ``tracker`` (``step``), its structure, or it ended in error."""

    kind: Literal["position", "structure", "error"]
    tracker: ProgressTracker
    step: Step
    error: BaseException | None = None


class ProgressTracker:
    """An ordered list of steps with a current position, child trackers and subscribers."""

    UNSTARTED = UNSTARTED
    DONE = DONE

    def __init__(self, *steps: Step) -> None:
        if len(set(map(id, steps))) != len(steps):
            raise ValueError("a step may appear only once in a tracker")
        self.steps: tuple[Step, ...] = (UNSTARTED, *steps, DONE)
        self._current: Step = UNSTARTED
        self._children: dict[int, ProgressTracker] = {}
        self._parent: ProgressTracker | None = None
        self._subscribers: list[Callback] = []
        self.error: BaseException | None = None
        self._attr_name: str | None = None

    # ---- per-instance copies when declared on a flow class ---------------------------------
    def __set_name__(self, owner: type, name: str) -> None:
        self._attr_name = name

    @overload
    def __get__(self, instance: None, owner: type) -> ProgressTracker: ...
    @overload
    def __get__(self, instance: object, owner: type) -> ProgressTracker: ...
    def __get__(self, instance: object | None, owner: type) -> ProgressTracker:
        if instance is None or self._attr_name is None:
            return self
        key = f"_parley_tracker_{self._attr_name}"
        tracker: ProgressTracker | None = instance.__dict__.get(key)
        if tracker is None:
            tracker = self.copy()
            instance.__dict__[key] = tracker
        return tracker

    def copy(self) -> ProgressTracker:
        """A fresh tracker over the same steps, at UNSTARTED."""
        return ProgressTracker(*self.steps[1:-1])

    # ---- position ---------------------------------------------------------------------------
    @property
    def current_step(self) -> Step:
        return self._current

    @current_step.setter
    def current_step(self, step: Step) -> None:
        if not any(s is step for s in self.steps):
            raise ValueError(f"{step!r} is not a step of this tracker")
        if step is self._current:
            return
        self._current = step
        if step.child_factory is not None and id(step) not in self._children:
            self.set_child_tracker(step, step.child_factory())
        self._notify(ProgressChange("position", self, step))

    @property
    def has_ended(self) -> bool:
        return self._current is DONE or self.error is not None

    def end_with_error(self, error: BaseException) -> None:
        self.error = error
        self._notify(ProgressChange("error", self, self._current, error))

    # ---- structure --------------------------------------------------------------------------
    def set_child_tracker(self, step: Step, child: ProgressTracker) -> None:
        if not any(s is step for s in self.steps):
            raise ValueError(f"{step!r} is not a step of this tracker")
        self._children[id(step)] = child
        child._parent = self
        self._notify(ProgressChange("structure", self, step))

    def child(self, step: Step) -> ProgressTracker | None:
        return self._children.get(id(step))

    def current_label(self) -> str | None:
        """The path of labels to the deepest current step (``"Signing / Collecting"``)."""
        if self._current is UNSTARTED:
            return None
        labels = [self._current.label]
        child = self.child(self._current)
        while child is not None and child._current is not UNSTARTED:
            labels.append(child._current.label)
            child = child.child(child._current)
        return " / ".join(labels)

    def tree(self, level: int = 0) -> list[tuple[int, str, bool]]:
        """Every step with its depth and whether it is current, children under their step."""
        rows: list[tuple[int, str, bool]] = []
        for step in self.steps[1:]:
            rows.append((level, step.label, step is self._current))
            child = self.child(step)
            if child is not None:
                rows.extend(child.tree(level + 1))
        return rows

    # ---- observation ------------------------------------------------------------------------
    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` on every change here or below; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, change: ProgressChange) -> None:
        tracker: ProgressTracker | None = self
        while tracker is not None:
            for callback in list(tracker._subscribers):
                callback(change)
            tracker = tracker._parent

    def __repr__(self) -> str:
        labels = ", ".join(s.label for s in self.steps[1:-1])
        return f"ProgressTracker({labels} @ {self._current.label})"


def tracker_of(flow: Any) -> ProgressTracker | None:
    """The flow's tracker, if it declares one."""
    tracker = getattr(flow, "progress_tracker", None)
    return tracker if isinstance(tracker, ProgressTracker) else None


def adopt_tracker(flow: Any, tracker: ProgressTracker) -> bool:
    """Make ``flow`` (a restored copy) report to ``tracker``, the one its clients hold.

    Returns whether the flow's class declares a tracker (``progress_tracker``) to replace.
    """
    declared = getattr(type(flow), "progress_tracker", None)
    if not isinstance(declared, ProgressTracker) or declared._attr_name is None:
        return False
    flow.__dict__[f"_parley_tracker_{declared._attr_name}"] = tracker
    return True


__all__ = [
    "DONE",
    "UNSTARTED",
    "ProgressChange",
    "ProgressTracker",
    "Step",
    "adopt_tracker",
    "tracker_of",
]
