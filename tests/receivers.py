"""OTLP receivers, over HTTP and gRPC, decoding the real protobuf requests they are sent
into plain records."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def decode_spans(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """The spans of an OTLP trace export request, as plain records."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "status": span.status.code,
                        "status_message": span.status.message,
                        "attributes": {a.key: _any_value(a.value) for a in span.attributes},
                        "events": [
                            (
                                e.name,
                                e.time_unix_nano,
                                {a.key: _any_value(a.value) for a in e.attributes},
                            )
                            for e in span.events
                        ],
                        "resource": resource,
                    }
                )
    return spans


def decode_logs(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    """The log records of an OTLP logs export request, as plain records."""
    records = []
    for resource_logs in request.resource_logs:
        resource = {a.key: a.value.string_value for a in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append({
                    "time": record.time_unix_nano,
                    "observed_time": record.observed_time_unix_nano,
                    "severity_number": record.severity_number,
                    "severity": record.severity_text,
                    "body": _any_value(record.body),
                    "attributes": {a.key: _any_value(a.value) for a in record.attributes},
                    "trace_id": record.trace_id.hex(),
                    "span_id": record.span_id.hex(),
                    "scope": scope_logs.scope.name,
                    "resource": resource,
                })  # fmt: skip
    return records


class OtlpReceiver:
    """An OTLP/HTTP endpoint decoding the real protobuf requests it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.fail_next = 0  # answer this many requests with 503
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":  # the collector's default
                    body = gzip.decompress(body)
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    receiver.spans.extend(decode_spans(request))
                elif self.path == "/v1/metrics":
                    receiver.metric_requests.append(ExportMetricsServiceRequest.FromString(body))
                elif self.path == "/v1/logs":
                    receiver.logs.extend(decode_logs(ExportLogsServiceRequest.FromString(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


def _any_value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


class GrpcTraceReceiver:
    """An OTLP/gRPC trace and logs endpoint, decoding into the same records as OtlpReceiver."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        spans, logs = self.spans, self.logs

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # the gRPC method name
                spans.extend(decode_spans(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                logs.extend(decode_logs(request))
                return logs_service_pb2.ExportLogsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)
