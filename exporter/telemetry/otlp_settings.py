"""OTLP settings from flags and the standard ``OTEL_*`` environment (no OTel SDK import)."""

from __future__ import annotations

import os
from dataclasses import dataclass

PROTOCOLS = ("grpc", "http/protobuf")


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    endpoint: str | None  # None: the exporters read OTEL_EXPORTER_OTLP_* themselves
    protocol: str = "http/protobuf"
    service_name: str | None = None  # None: OTEL_SERVICE_NAME, else "runwatch"
    export_interval_seconds: float = 10.0
    max_queue: int = 8192  # spans, and log records, waiting; the oldest go first when full
    naming: str = "semconv"  # or "prometheus": see exporter.telemetry.metric
    metrics: bool = True  # False: spans (and logs) only
    traces: bool = True  # False: no spans (metrics straight to Prometheus, say)
    logs: bool = True  # the event log: every event as a log record
    # service.instance.id unless OTEL_RESOURCE_ATTRIBUTES names one: the address Prometheus
    # scrapes runwatch at, so a series pushed over OTLP gets the `instance` a scrape gives
    instance: str | None = None


def otlp_settings_from(
    endpoint: str | None,
    protocol: str | None,
    service_name: str | None,
    naming: str = "semconv",
    metrics: bool = True,
    logs: bool = True,
    traces: bool = True,
    instance: str | None = None,
) -> OtlpSettings | None:
    """OTLP settings from flags and the standard environment; None when OTLP is off."""
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint and not env_endpoint:
        return None
    protocol = protocol or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol not in PROTOCOLS:
        raise ValueError(f"OTLP protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    interval_ms = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL")
    return OtlpSettings(
        endpoint=endpoint or None,
        protocol=protocol,
        service_name=service_name,
        export_interval_seconds=float(interval_ms) / 1000 if interval_ms else 10.0,
        naming=naming,
        metrics=metrics,
        traces=traces,
        logs=logs,
        instance=instance,
    )
