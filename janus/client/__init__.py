"""The small SDK for producers and workers (docs/protocol.md is the contract it follows)."""

from janus.client.producer import Producer
from janus.client.worker import ReadyJob, RetryAfter, Worker, WorkRecord

__all__ = ["Producer", "ReadyJob", "RetryAfter", "Worker", "WorkRecord"]
