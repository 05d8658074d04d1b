"""runwatch: ML training and trading events as Prometheus metrics and OpenTelemetry telemetry."""

__version__ = "0.2.0"
