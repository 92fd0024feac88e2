"""What Janus shows over HTTP: Prometheus metrics."""
