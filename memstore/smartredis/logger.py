"""SmartRedis's logging API: ``log_data``/``log_warning``/``log_error``, ``LL*`` levels and
``LogContext``, on top of :mod:`logging`.

As in SmartRedis, a message is written when its level is at or below ``SR_LOG_LEVEL``
(``quiet``, ``info`` (default), ``debug``, ``developer``), to the file ``SR_LOG_FILE`` or
else to stderr. Records go through the ``memstore.smartredis`` logger, so an application's
own logging configuration sees them too.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NamedTuple

from memstore.smartredis.util import typecheck

__all__ = [
    "LLDebug",
    "LLDeveloper",
    "LLInfo",
    "LLQuiet",
    "LogContext",
    "LogLevel",
    "log_data",
    "log_error",
    "log_warning",
]

ENV_LOG_LEVEL = "SR_LOG_LEVEL"
ENV_LOG_FILE = "SR_LOG_FILE"


class LogLevel(NamedTuple):
    """A SmartRedis log level: messages at or below the configured one are written."""

    name: str
    value: int


LLQuiet = LogLevel("LLQuiet", 1)
LLInfo = LogLevel("LLInfo", 2)
LLDebug = LogLevel("LLDebug", 3)
LLDeveloper = LogLevel("LLDeveloper", 4)
_BY_SETTING = {"quiet": LLQuiet, "info": LLInfo, "debug": LLDebug, "developer": LLDeveloper}


class _Destination(logging.Handler):
    """Writes to ``SR_LOG_FILE`` when set, else to the *current* ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            path = os.environ.get(ENV_LOG_FILE)
            if path:
                with open(path, "a", encoding="utf-8") as out:
                    out.write(line)
            else:
                sys.stderr.write(line)
        except Exception:  # logging must never break the caller
            self.handleError(record)


log = logging.getLogger(__name__.rsplit(".", 1)[0])
if not any(isinstance(h, _Destination) for h in log.handlers):
    _handler = _Destination()
    _handler.setFormatter(logging.Formatter("%(sr_context)s@%(asctime)s:%(message)s"))
    log.addHandler(_handler)
log.setLevel(logging.DEBUG)


def _configured() -> int:
    setting = os.environ.get(ENV_LOG_LEVEL, "info").strip().lower()
    return _BY_SETTING.get(setting, LLInfo).value


def _log(context: str, level: LogLevel, data: str, kind: int) -> None:
    typecheck(context, "context", str)
    typecheck(level, "level", LogLevel)
    typecheck(data, "data", str)
    if level.value <= _configured():
        prefix = {logging.WARNING: "WARNING: ", logging.ERROR: "ERROR: "}.get(kind, "")
        log.log(kind, "%s%s", prefix, data, extra={"sr_context": context})


def log_data(context: str, level: LogLevel, data: str) -> None:
    """Log ``data`` for ``context`` when ``level`` is enabled."""
    _log(context, level, data, logging.INFO)


def log_warning(context: str, level: LogLevel, data: str) -> None:
    """Log ``data`` as a warning for ``context`` when ``level`` is enabled."""
    _log(context, level, data, logging.WARNING)


def log_error(context: str, level: LogLevel, data: str) -> None:
    """Log ``data`` as an error for ``context`` when ``level`` is enabled."""
    _log(context, level, data, logging.ERROR)


class LogContext:
    """A named source of log messages; the base of ``Client`` and ``Dataset`` logging."""

    def __init__(self, context: str):
        typecheck(context, "context", str)
        self._log_context = context

    def log_data(self, level: LogLevel, data: str) -> None:
        """Log ``data`` from this object when ``level`` is enabled."""
        log_data(self._log_context, level, data)

    def log_warning(self, level: LogLevel, data: str) -> None:
        """Log ``data`` as a warning from this object when ``level`` is enabled."""
        log_warning(self._log_context, level, data)

    def log_error(self, level: LogLevel, data: str) -> None:
        """Log ``data`` as an error from this object when ``level`` is enabled."""
        log_error(self._log_context, level, data)
