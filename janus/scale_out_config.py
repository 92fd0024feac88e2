"""`[scale_out]`: whether `janus run` shares the dependencies with other processes (member mode,
docs/scale-out.md). A process setting, not part of the policy of record: each process reads it
from its own file, and a stored version neither carries nor changes it.

Its own module so that config.py does not grow.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ScaleOutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Off: one leader for every dependency (docs/failover.md), exactly as before. On: this process
    # is a member; the members share the dependencies, each led by one of them under its own lease.
    enabled: bool = False
