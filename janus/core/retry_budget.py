"""The retry budget of one dependency: retries may take only a share of its admissions.

Per-job backoff spreads one job's retries out, but a thousand failing jobs still make a
thousand retries. The budget caps retries as a share of everything the dependency was
admitted over a sliding window (Finagle's RetryBudget, counted exactly instead of with a
token balance).

The rule, at a decision time `now`, over the admissions with `admitted_at + window > now`
(the same half-open windows as the rate limits), R of them retries and A in all:

    a retry may be admitted  iff  R + 1 <= max(min_retries, floor(budget × (A + 1)))

that is, counting the retry itself, retries stay within `budget` of the admissions, rounded
down, except that `min_retries` retries per window are always allowed (so retries of a
dependency that gets no new jobs are not starved forever). The product is computed in
floating point and rounded down, which can only err on the strict side. So at the moment
of every retry admission, the window ending then holds at most max(min_retries,
budget × A) retries. A first attempt is never held back by the budget; it only counts.
A budget of 1.0 admits every retry.

A retry is an admission of a job that has failed before (`failures > 0`): an admission
that came back unused, or one reset by `janus jobs retry`, is not a retry.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from itertools import repeat

from janus.core.policy import RetryPolicy


class RetryBudget:
    """The admissions of one dependency inside its budget window, each marked retry or not.

    Callers pass non-decreasing `now` values (the scheduler's clock never goes back).
    """

    __slots__ = ("_log", "_retries", "budget", "min_retries", "window")

    def __init__(self, policy: RetryPolicy) -> None:
        self.budget = policy.budget
        self.window = policy.budget_window
        self.min_retries = policy.min_retries
        self._log: deque[tuple[float, bool]] = deque()
        self._retries = 0

    def _prune(self, now: float) -> None:
        log, window = self._log, self.window
        while log and log[0][0] + window <= now:
            _, retry = log.popleft()
            self._retries -= retry

    def _allows(self, retries: int, admissions: int) -> bool:
        allowance = max(self.min_retries, math.floor(self.budget * (admissions + 1)))
        return retries + 1 <= allowance

    def allows_retry(self, now: float) -> bool:
        self._prune(now)
        return self._allows(self._retries, len(self._log))

    def record(self, at: float, *, retry: bool) -> None:
        self._log.append((at, retry))
        self._retries += retry

    def record_many(self, at: float, *, admissions: int, retries: int) -> None:
        """`admissions` admissions at `at`, `retries` of them retries (one decision's batch).

        Their order in the log does not matter: entries with the same stamp leave the window
        together (`_prune`), and `free_at` only counts at the boundaries between stamps.
        """
        log = self._log
        if retries:
            log.extend(repeat((at, True), retries))
        if admissions == 1 + retries:  # most decisions at steady traffic admit one
            log.append((at, False))
        else:
            log.extend(repeat((at, False), admissions - retries))
        self._retries += retries

    def restore(self, admissions: Iterable[tuple[float, bool]]) -> None:
        """Reload history after a restart or a takeover (in any order)."""
        self._log = deque(sorted([*self._log, *admissions]))
        self._retries = sum(retry for _, retry in self._log)

    def free_at(self, now: float) -> float:
        """The earliest time a retry fits if nothing else is admitted meanwhile (time alone frees it)."""
        self._prune(now)
        retries, admissions = self._retries, len(self._log)
        if self._allows(retries, admissions):
            return now
        log = self._log
        for index, (stamp, retry) in enumerate(log):
            retries -= retry
            admissions -= 1
            if index + 1 < len(log) and log[index + 1][0] == stamp:
                continue  # admissions at the same instant leave the window together
            if self._allows(retries, admissions):
                return stamp + self.window
        raise AssertionError("an empty window always allows a retry")  # min_retries >= 1

    @property
    def retries(self) -> int:
        return self._retries

    def __len__(self) -> int:
        return len(self._log)
