"""The FlowManager actor: restores flows at start-up and answers for the node's flows.

At start-up it reads the ids of every RUNNABLE or HOSPITALIZED flow and has their workers restore
them; the node consumes peer messages only after that. It sums the workers' counters for operators.
It supervises the workers: a worker that dies (:class:`WorkerFailed`) is replaced by a new one for
the same shard, which restores the shard's flows from the store and takes over their handles.
It never blocks on another actor: replies travel in futures that the caller (the node's API) waits
on. (Starting a flow does not go through it: ``Node.start_flow`` picks the flow's id — random, or
derived from the client id so that a repeated client id reaches the same flow — and tells the
worker that owns it directly, one thread hop less on the hot path.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from parley.actors.base import Actor
from parley.actors.worker import Inspect, RestoreFlows
from parley.engine.handles import FlowHandle, shard_of
from parley.store import SqliteStore

log = logging.getLogger("parley.manager")


@dataclass(frozen=True, slots=True)
class RestoreAll:
    """Restore every stored runnable flow; the reply lists one future per worker."""

    reply: Future[list[Future[int]]]


@dataclass(frozen=True, slots=True)
class StatsRequest:
    reply: Future[list[Future[dict[str, int]]]]


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """Worker ``index`` died; ``handles`` are those its clients hold."""

    index: int
    handles: dict[str, FlowHandle[Any]]


class FlowManager(Actor):
    """See the module docstring.

    Args:
        workers: the workers, by shard; a replaced worker is replaced in this very list, which the
            node shares.
        db_path: the node's database.
        start_worker: starts a new worker for a shard (``None``: no supervision).
    """

    def __init__(
        self,
        workers: list[pykka.ActorRef[Any]],
        db_path: Path,
        start_worker: Callable[[int], pykka.ActorRef[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.workers = workers
        self.db_path = db_path
        self.start_worker = start_worker

    def on_receive(self, message: Any) -> Any:
        match message:
            case RestoreAll(reply=reply):
                reply.set_result(self._restore_all())
            case WorkerFailed(index=index, handles=handles):
                self._replace(index, handles)
            case StatsRequest(reply=reply):
                futures: list[Future[dict[str, int]]] = []
                for worker in self.workers:
                    future: Future[dict[str, int]] = Future()
                    worker.tell(Inspect(future))
                    futures.append(future)
                reply.set_result(futures)
            case _:
                log.warning("manager ignored %r", message)
        return None

    def _replace(self, index: int, handles: dict[str, FlowHandle[Any]]) -> None:
        if self.start_worker is None:
            return
        try:
            worker = self.start_worker(index)
        except Exception:
            log.exception("could not start a new worker %d", index)
            return
        self.workers[index] = worker
        done: Future[int] = Future()
        done.add_done_callback(
            lambda f: log.warning("worker %d replaced; %d flows restored", index, f.result())
        )
        worker.tell(RestoreFlows(tuple(self._runnable_by_shard()[index]), done, handles))

    def _restore_all(self) -> list[Future[int]]:
        by_worker = self._runnable_by_shard()
        futures: list[Future[int]] = []
        for index, ids in by_worker.items():  # every worker: each also re-admits its held inits
            future: Future[int] = Future()
            self.workers[index].tell(RestoreFlows(tuple(ids), future))
            futures.append(future)
        restoring = sum(map(len, by_worker.values()))
        if restoring:
            log.info("restoring %d flows", restoring)
        return futures

    def _runnable_by_shard(self) -> dict[int, list[str]]:
        """The stored flows to restart (in start order), by the shard that owns them."""
        with SqliteStore(self.db_path, readonly=True) as store:
            flow_ids = store.runnable_flow_ids()
        by_shard: dict[int, list[str]] = {index: [] for index in range(len(self.workers))}
        for flow_id in flow_ids:
            by_shard[shard_of(flow_id, len(self.workers))].append(flow_id)
        return by_shard


__all__ = ["FlowManager", "RestoreAll", "StatsRequest", "WorkerFailed"]
