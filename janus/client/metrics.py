"""A worker's own Prometheus metrics (`janus worker --metrics-port`), on a registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from janus.client.worker import Worker, WorkRecord


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, worker: Worker) -> None:
        self.jobs = Counter(
            "janus_worker_jobs_total",
            "Admissions this worker handled, by outcome: success, failure (reported), expired "
            "(refused unstarted, returned to Janus).",
            ["dependency", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "janus_worker_job_seconds",
            "Handler run time, from start to the result (cut off before the lease ends).",
            ["dependency"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        running = Gauge("janus_worker_running_handlers", "Handlers running now.", registry=registry)
        running.set_function(lambda: worker.running)
        overrunning = Gauge(
            "janus_worker_overrunning_functions",
            "Plain functions past their lease: reported failed, still running (they cannot be "
            "stopped), each keeping a thread and a handler slot busy.",
            registry=registry,
        )
        overrunning.set_function(lambda: worker.overrunning)

    def observe(self, record: WorkRecord) -> None:
        self.jobs.labels(record.dependency, record.outcome).inc()
        if record.started_at is not None and record.finished_at is not None:
            self.seconds.labels(record.dependency).observe(max(0.0, record.finished_at - record.started_at))
