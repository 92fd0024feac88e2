"""Whether anyone consumes a dependency's ready queue.

An admission to a queue nobody reads only waits there until its admission TTL ends and
comes back unused; meanwhile it counted against the dependency's rate limits, and Janus
admitted the job again, and again. So a dependency whose ready queue has no consumer
admits nothing (wait reason `no_worker`) until one comes. The broker knows the consumer
count; the shell polls it and tells this gate. A gate never told anything admits, as
before: the count is a fact the shell observes, not a limit of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True, slots=True)
class WorkerPresence:
    consumers: int | None = None  # as last observed; None: never observed
    queue: str = ""  # the ready queue, as the shell names it

    def observe(self, consumers: int, queue: str) -> bool:
        """Record an observation; True if the dependency went from no worker to some, or back."""
        was_absent = self.absent
        self.consumers, self.queue = consumers, queue
        return was_absent != self.absent and (was_absent or consumers == 0)

    @property
    def absent(self) -> bool:
        return self.consumers == 0

    def detail(self) -> str:
        return f"no worker is consuming {self.queue}"
