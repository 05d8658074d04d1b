"""Instrumenting training scripts for runwatch, with the standard library only (no server
dependency is imported): :class:`TrainingMonitor` (seed 002's API), the transports, and
seed 000's drop-in emitter functions in :mod:`exporter.sdk.training_events`."""

from exporter.sdk.monitor import TrainingMonitor
from exporter.sdk.transports import FileTransport, HttpTransport, OtelTransport, Transport

__all__ = ["FileTransport", "HttpTransport", "OtelTransport", "TrainingMonitor", "Transport"]
