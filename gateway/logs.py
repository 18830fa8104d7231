"""Keep tokens out of logs.

Tools may authenticate with `?token=<JWT>` (docs/protocol.md), and uvicorn logs
every request path with its query string; this filter rewrites such values
before any handler sees the record.
"""

from __future__ import annotations

import logging
import re
from typing import Final

_TOKEN_IN_QUERY: Final = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"']+")
REDACTED: Final = "[redacted]"
LOGGERS: Final = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1" + REDACTED, text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


_filter: Final = RedactTokens()


def redact_tokens_in_server_logs() -> None:
    """Attach the filter to uvicorn's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
