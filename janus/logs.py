"""Log lines for people (the default) or for machines: JANUS_LOG_FORMAT=json writes one JSON
object per line, with the dependency, job id and epoch where the event has them."""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Context a log call passes as `extra=`: copied into the JSON object when present.
CONTEXT = ("dependency", "job_id", "epoch", "scope", "source", "reason", "kind", "identity")
# The leader's epoch while it leads: set by the service for the term, seen by every log call
# of the term's tasks (they inherit the context), so no call has to pass it.
term_epoch: ContextVar[int | None] = ContextVar("janus_term_epoch", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        epoch = term_epoch.get()
        if epoch is not None:
            event["epoch"] = epoch
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                event[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def configure(level: str, format: str) -> None:
    """The root handler on stderr, in the format asked for ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
