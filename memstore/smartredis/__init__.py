"""SmartRedis's Python API on memstore: ``import memstore.smartredis as smartredis``.

``Client``, ``Dataset``, ``ConfigOptions``, the logging API and the error classes behave as
SmartRedis 0.6's do (constructor forms, TypeError for wrong argument types, RedisReplyError
and its subclasses); underneath is :class:`memstore.Client`, and each error class is also
the matching memstore error. See README.md, "Coming from SmartSim/SmartRedis".
"""

from __future__ import annotations

from memstore.smartredis.client import Client
from memstore.smartredis.configoptions import ConfigOptions
from memstore.smartredis.dataset import Dataset
from memstore.smartredis.dataset_utils import DatasetConverter
from memstore.smartredis.logger import (
    LLDebug,
    LLDeveloper,
    LLInfo,
    LLQuiet,
    LogContext,
    log_data,
    log_error,
    log_warning,
)

__all__ = [
    "Client",
    "ConfigOptions",
    "Dataset",
    "DatasetConverter",
    "LLDebug",
    "LLDeveloper",
    "LLInfo",
    "LLQuiet",
    "LogContext",
    "log_data",
    "log_error",
    "log_warning",
]
