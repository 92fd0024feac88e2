"""The small SDK for producers and workers (docs/protocol.md is the contract it follows)."""

from janus.client.handler_outcomes import Cost, Failed, RetryAfter, Throttled
from janus.client.producer import Producer
from janus.client.sync_producer import SyncProducer, submit
from janus.client.worker import ReadyJob, Worker, WorkRecord

__all__ = [
    "Cost",
    "Failed",
    "Producer",
    "ReadyJob",
    "RetryAfter",
    "SyncProducer",
    "Throttled",
    "Worker",
    "WorkRecord",
    "submit",
]
