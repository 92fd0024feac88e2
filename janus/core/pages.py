"""Which scopes' stored first attempts the store should read next (the scheduler's page requests)."""

from __future__ import annotations

from collections.abc import Mapping

from janus.core.decisions import PageRequest
from janus.core.lane import Lane
from janus.core.paging import Pager


def page_requests(lanes: Mapping[str, Lane], pager: Pager, max_rows: int) -> list[PageRequest]:
    """Scopes whose first attempts in memory run low while more wait in the store.

    At most about `max_rows` jobs in all: a new term over ten thousand scopes must not
    read them all in one tick (the event loop, and with it the lease renewal, would
    wait). The rest are asked for at the next ticks, scopes whose turn has come first.
    """
    requests: list[PageRequest] = []
    if not (pager.urgent or pager.wanted):
        return requests  # the usual tick: nothing asked for
    per_scope = pager.per_scope()
    rows = 0
    for wanted in (pager.urgent, pager.wanted):
        while wanted and rows < max_rows:
            key = next(iter(wanted))
            del wanted[key]
            dependency, name = key
            scope = lanes[dependency].scopes.get(name)
            if scope is None or scope.paging or not scope.stored:
                continue
            room = per_scope - len(scope.fresh)
            if room <= 0:
                continue
            scope.paging = True
            rows += room
            requests.append(
                PageRequest(dependency=dependency, scope=name, after_seq=scope.loaded_upto, limit=room)
            )
    return requests
