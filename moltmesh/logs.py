"""Structured logs: one event per line, JSON by default.

Use ``log_event(logger, "event.name", key=value, ...)``; the formatter writes
``{"ts": ..., "level": ..., "logger": ..., "event": ..., **fields}``. The text format is for
people at a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = "moltmesh_fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, _FIELDS, {}).items())
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LIBRARY_LOGGERS = ("aiohttp", "asyncio")
"""Libraries the node runs whose own log lines go out in the same format, at warning and above
(or the node's level when it is higher): one format per stream, and no bare tracebacks."""


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    """Send moltmesh's logs, and the warnings of ``LIBRARY_LOGGERS``, to stderr in ``fmt``;
    idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("moltmesh")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = [handler]
        library.setLevel(max(root.level, logging.WARNING))
        library.propagate = False


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})
