"""Benchmarks that run whole processes against the local RabbitMQ and PostgreSQL.

`python -m benchmarks.throughput` compares Janus with a bare relay in one run;
`relay` and `load` are the processes it starts.
"""
