"""The small SDK for producers and workers (docs/protocol.md is the contract it follows)."""

from janus.client.producer import Producer
from janus.client.sync_producer import SyncProducer, submit
from janus.client.worker import Cost, Failed, ReadyJob, RetryAfter, Throttled, Worker, WorkRecord

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
