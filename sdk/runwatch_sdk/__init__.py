"""Instrumenting training scripts for runwatch, with the standard library only (no server
dependency is imported): :class:`TrainingMonitor` (seed 002's API), the transports, and
seed 000's drop-in emitter functions in :mod:`runwatch_sdk.training_events`."""

from runwatch_sdk.monitor import TrainingMonitor
from runwatch_sdk.transports import FileTransport, HttpTransport, OtelTransport, Transport

__version__ = "0.2.0"  # released with runwatch, at its version (a test keeps them equal)

__all__ = ["FileTransport", "HttpTransport", "OtelTransport", "TrainingMonitor", "Transport"]
