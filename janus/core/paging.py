"""Which scopes' first attempts to read from the store, and how many of each to keep in memory.

Only the head of each scope's backlog of first attempts is in memory; the rest stays in the
store and is paged in per scope, so the leader's memory follows the number of active scopes,
not the backlog. The lanes tell the pager when a scope runs low (`want`) or when its turn came
with nothing in memory (`urgent`); the scheduler turns that into `PageRequest`s.
"""

from __future__ import annotations

MEMORY_BUDGET = 100_000  # first attempts in memory over all scopes, when there are few scopes
MIN_PER_SCOPE = 4
MAX_PER_SCOPE = 1024
PAGE_ROWS_PER_TICK = 4096  # jobs paged in per tick, at most (about: whole pages)

ScopeKey = tuple[str, str]  # (dependency, scope)


class Pager:
    """The scopes to page in, and the per-scope share of the memory budget."""

    __slots__ = (
        "_max_per_scope",
        "_memory_budget",
        "_min_per_scope",
        "_per_scope_for",
        "_per_scope_value",
        "scopes",
        "urgent",
        "wanted",
    )

    def __init__(self, memory_budget: int, per_scope: tuple[int, int]) -> None:
        self._memory_budget = memory_budget
        self._min_per_scope, self._max_per_scope = per_scope
        self.scopes = 0  # scopes the lanes hold, over all dependencies
        self._per_scope_for = -1  # per_scope() was worked out for this many scopes
        self._per_scope_value = 0
        # Scopes to page in, in the order they asked (a new term asks in fair-queue order), and
        # the ones whose turn came with nothing in memory, served first.
        self.wanted: dict[ScopeKey, None] = {}
        self.urgent: dict[ScopeKey, None] = {}

    def per_scope(self) -> int:
        """First attempts to keep in memory per scope."""
        # Asked at every submission: worked out again only when the number of scopes changed.
        if self._per_scope_for != self.scopes:
            share = self._memory_budget // max(1, self.scopes)
            self._per_scope_value = max(self._min_per_scope, min(self._max_per_scope, share))
            self._per_scope_for = self.scopes
        return self._per_scope_value
