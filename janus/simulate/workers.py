"""The simulated workers of one dependency: their handlers, the admissions waiting for one, and
the dependency's capacity as the calls meet it (the engine, `janus/simulate/engine.py`, drives them)."""

from __future__ import annotations

from collections import deque

from janus.core.jobs import Admission
from janus.simulate.workload import ServiceModel, WorkerModel


class Pool:
    """The handlers of one dependency across all its workers, and the admissions waiting for one."""

    __slots__ = ("busy", "calls", "capacity", "model", "queue", "service", "waiting")

    def __init__(self, model: WorkerModel, service: ServiceModel | None) -> None:
        self.model = model
        self.service = service
        self.busy = 0
        self.queue: deque[tuple[str, int]] = deque()
        self.waiting: dict[tuple[str, int], Admission] = {}
        self.capacity = service.capacity if service is not None else None
        self.calls: deque[float] = deque()  # accepted calls still inside the capacity window

    def free(self) -> bool:
        slots = self.model.slots
        return slots is None or self.busy < slots

    def throttles(self, at: float) -> bool:
        """Is a call at `at` beyond the dependency's capacity? (If not, it is counted.)"""
        capacity = self.capacity
        if capacity is None:
            return False
        calls, window = self.calls, capacity.window
        while calls and calls[0] + window <= at:
            calls.popleft()
        if len(calls) >= capacity.count:
            return True
        calls.append(at)
        return False
