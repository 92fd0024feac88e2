"""`janus simulate`: the production scheduler on a virtual clock, against a workload file.

`workload` reads the workload file (arrivals, how each dependency answers, the workers), with
`distributions` and `costs` (costed jobs); `engine` plays it through the same `Scheduler` calls
the service's tick makes, leaving out the admission steps `skipping` proves idle, into the
records of `logs`; `report` turns the run into figures and text, and the timeline CSV; `plot`
draws it (matplotlib, optional).
docs/simulate.md says what it can and cannot know.
"""

from __future__ import annotations

from janus.simulate.engine import Simulation, simulate
from janus.simulate.logs import Outcome
from janus.simulate.workload import Workload, WorkloadError, load_workload, parse_workload

__all__ = [
    "Outcome",
    "Simulation",
    "Workload",
    "WorkloadError",
    "load_workload",
    "parse_workload",
    "simulate",
]
