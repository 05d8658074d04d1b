"""LogLines from the reducers, as OTel log records: the event log that Loki stores.

Each record has the event's time (``observed_timestamp`` is when runwatch read it),
its severity, its line as the body, its attributes, and the trace and span ids of
the span it belongs to, derived as :mod:`exporter.telemetry.spans` derives them,
so Grafana jumps from a line to its trace and back. Records go to the exporter
through a :class:`~exporter.telemetry.shipper.Shipper`, like spans.
"""

from __future__ import annotations

import time

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.resources import Resource

from exporter import __version__
from exporter.core.event_log import ERROR, INFO, WARN
from exporter.core.outputs import LogLine
from exporter.telemetry.spans import SCOPE, context_of, ns

SEVERITIES = {INFO: SeverityNumber.INFO, WARN: SeverityNumber.WARN, ERROR: SeverityNumber.ERROR}


class LogWriter:
    """Turns LogLines into OTel log records on a logger provider."""

    def __init__(self, resource: Resource, processor: LogRecordProcessor) -> None:
        self.provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(processor)
        self._logger = self.provider.get_logger(SCOPE, __version__)

    def write(self, line: LogLine) -> None:
        self._logger.emit(
            timestamp=ns(line.timestamp),
            observed_timestamp=time.time_ns(),
            context=context_of(line.trace_key, line.span),
            severity_number=SEVERITIES[line.severity],
            severity_text=line.severity,
            body=line.body,
            attributes=line.attributes,
        )
