"""structlog, configured once: JSON lines on stderr, with the RPC's fields on every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

# Set once per RPC by the server's interceptor, and turned into fields only when a line is
# written: an RPC that logs nothing (nearly every Rank) pays one ContextVar.set and reset.
request_fields: ContextVar[Callable[[], Mapping[str, object]] | None] = ContextVar(
    "request_fields", default=None
)


def add_request_fields(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    fields = request_fields.get()
    if fields is not None:
        try:
            values = fields()
        except Exception as exc:  # a log line must never fail because of its decoration
            values = {"request_fields_error": repr(exc)}
        for key, value in values.items():
            event_dict.setdefault(key, value)
    return event_dict


def configure(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
