"""Janus: admission control for background jobs.

Janus decides *when* a job may run; it never runs it. The decisions live in
`janus.core` (pure, synchronous, clock injected); `janus.store`, `janus.broker`
and `janus.service` move data between that core, PostgreSQL and RabbitMQ.
"""

__version__ = "0.1.0"
