"""Prometheus remote-write 1.0 messages (``prompb.WriteRequest``), built with protobuf.

The four messages runwatch sends, declared with protobuf's descriptor API from
Prometheus's ``prompb/types.proto`` and ``remote.proto`` (same package, names and
field numbers; the gogoproto options there only shape Go code), so the encoding is
protobuf's own, not hand-rolled. Compression (snappy block format, as the protocol
asks) is python-snappy's.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_FIELDS: dict[str, list[tuple[str, int, int, str | None, bool]]] = {
    # message: (field, number, type, message type, repeated)
    "Sample": [("value", 1, _F.TYPE_DOUBLE, None, False),
               ("timestamp", 2, _F.TYPE_INT64, None, False)],
    "Label": [("name", 1, _F.TYPE_STRING, None, False),
              ("value", 2, _F.TYPE_STRING, None, False)],
    "TimeSeries": [("labels", 1, _F.TYPE_MESSAGE, ".prometheus.Label", True),
                   ("samples", 2, _F.TYPE_MESSAGE, ".prometheus.Sample", True)],
    "WriteRequest": [("timeseries", 1, _F.TYPE_MESSAGE, ".prometheus.TimeSeries", True)],
}  # fmt: skip


def _messages() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(
        name="runwatch/prompb.proto", package="prometheus", syntax="proto3"
    )
    for name, fields in _FIELDS.items():
        message = file.message_type.add(name=name)
        for field_name, number, field_type, type_name, repeated in fields:
            field = message.field.add(name=field_name, number=number, type=field_type)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in _FIELDS
    }


_CLASSES = _messages()
WriteRequest = _CLASSES["WriteRequest"]


def write_request(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    """A snappy-compressed WriteRequest of ``(labels, [(timestamp ms, value), ...])``;
    labels are sorted by name, as the protocol requires."""
    import snappy

    request = WriteRequest()
    for labels, samples in series:
        timeseries = request.timeseries.add()
        for name in sorted(labels):
            timeseries.labels.add(name=name, value=labels[name])
        for timestamp, value in samples:
            timeseries.samples.add(value=value, timestamp=timestamp)
    compressed: bytes = snappy.compress(request.SerializeToString())
    return compressed
