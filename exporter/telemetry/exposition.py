"""``/metrics`` as text: the catalogue rendered from a snapshot of the pipeline, each run's
lines kept until the run changes (:class:`~exporter.telemetry.run_cache.RunCache`).

The text is what prometheus-client's encoders write for the same families, byte for byte
(a test compares the two): the Prometheus text format or OpenMetrics, as the request's
``Accept`` asks (prometheus-client's own negotiation), labels sorted by name, values as
Go prints them. prometheus-client renders runwatch's own process (``process_*``,
``python_*``) after the catalogue, with its own encoder. Rendering here rather than
through a ``Collector`` is what lets a finished run's text be kept: a scrape of a
thousand runs of which ten are live renders ten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from gzip import compress
from typing import cast

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.utils import floatToGoString

from exporter.core.outputs import Histogram
from exporter.core.state import Run
from exporter.pipeline import Pipeline
from exporter.telemetry.catalogue import metrics_for
from exporter.telemetry.gzip_stream import LEVEL, BackgroundDeflater, gzip_stream
from exporter.telemetry.metric import (
    Metric,
    RenderErrors,
    RunSampler,
    Sample,
    Type,
    checked_samples,
    rendered_samples,
)
from exporter.telemetry.run_cache import RunBlocks


@dataclass(frozen=True, slots=True)
class TextFormat:
    """Which text a client asked for: OpenMetrics or the Prometheus text format, and how
    names are escaped (runwatch's names are legal in every scheme; only ``dots`` changes
    them)."""

    openmetrics: bool
    escaping: str


def negotiate(accept: str) -> tuple[TextFormat, str, Callable[[CollectorRegistry], bytes]]:
    """The format an ``Accept`` header asks for, its content type, and prometheus-client's
    encoder for it (which renders runwatch's own process)."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")
    escaping = content_type.partition("escaping=")[2] or "underscores"
    return TextFormat(openmetrics, escaping), content_type, encoder


_go_float = cast(Callable[[float], str], floatToGoString)  # a float as Go prints it (typed)


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _FamilyText:
    """One catalogue entry's text in one format: its header, and its samples' lines."""

    def __init__(self, metric: Metric, fmt: TextFormat) -> None:
        self.metric = metric
        name = metric.name
        if metric.type is Type.COUNTER:
            base = name.removesuffix("_total")
            family, samples = (base if fmt.openmetrics else base + "_total"), base + "_total"
        else:
            family = samples = name
        help_text = metric.help.replace("\\", r"\\").replace("\n", r"\n")
        if fmt.openmetrics:
            help_text = help_text.replace('"', r"\"")
        family = escape_metric_name(family, fmt.escaping)
        self.header = (f"# HELP {family} {help_text}\n"
                       f"# TYPE {family} {metric.type.value}\n").encode()  # fmt: skip
        labels = metric.prometheus_labels
        if metric.type is Type.HISTOGRAM:
            self._bucket = _Lines(f"{name}_bucket", [*labels, "le"], fmt.escaping)
            self._count = _Lines(f"{name}_count", labels, fmt.escaping)
            self._sum = _Lines(f"{name}_sum", labels, fmt.escaping)
        else:
            self._value = _Lines(samples, labels, fmt.escaping)

    def lines(self, samples: Sequence[Sample]) -> bytes:
        out: list[str] = []
        if self.metric.type is Type.HISTOGRAM:
            for label_values, hist in samples:
                self._histogram(out, label_values, hist)
        else:
            line = self._value.line
            out.extend(line(label_values, value) for label_values, value in samples)
        return "".join(out).encode()

    def _histogram(self, out: list[str], label_values: tuple[str, ...], hist: Histogram) -> None:
        running = 0
        for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            out.append(self._bucket.line((*label_values, le), running))
        out.append(self._count.line(label_values, running))
        out.append(self._sum.line(label_values, hist.total))


class _Lines:
    """Sample lines of one name: ``name{a="x",b="y"} 1.0``, labels in name order."""

    def __init__(self, name: str, labels: Sequence[str], escaping: str) -> None:
        self._name = escape_metric_name(name, escaping)
        order = sorted(range(len(labels)), key=lambda index: labels[index])
        self._labels = [(index, f'{escape_label_name(labels[index], escaping)}="')
                        for index in order]  # fmt: skip

    def line(self, label_values: Sequence[str], value: float) -> str:
        if not self._labels:
            return f"{self._name} {_go_float(value)}\n"
        pairs = ",".join(f'{key}{_label_value(label_values[index])}"'
                         for index, key in self._labels)  # fmt: skip
        return f"{self._name}{{{pairs}}} {_go_float(value)}\n"


STITCH_ABOVE = 256 << 10
"""Runs' text past which a gzip response joins pieces compressed once (a few ms to
compress whole below it)."""
BURST_LEVEL = 1
"""zlib level of a large body compressed whole because most of its pieces changed since
they were compressed: about 3x faster than level 6 for a fifth more bytes."""


@dataclass(slots=True)
class _Pieces:
    """Text in pieces, compressed by the background deflater when first asked for gzip:
    a block of runs' lines of each family that samples runs, or every family's header."""

    plain: tuple[bytes, ...]
    compressed: tuple[bytes, ...] | None = None
    queued: bool = False


def _join_lines(rows: Sequence[tuple[bytes, ...]]) -> _Pieces:
    return _Pieces(tuple(b"".join(column) for column in zip(*rows, strict=True)))


class _FormatCache:
    """What is kept for one text format: each family's header, and each run's and each
    block of runs' lines, plain and compressed."""

    def __init__(
        self, metrics: Sequence[Metric], fmt: TextFormat, render: Callable[..., tuple[bytes, ...]]
    ) -> None:
        self.families = [_FamilyText(metric, fmt) for metric in metrics]
        by_run = [f for f in self.families if type(f.metric.sample) is RunSampler]
        self.headers = _Pieces(tuple(f.header for f in self.families))
        self.runs: RunBlocks[tuple[bytes, ...], _Pieces] = RunBlocks(partial(render, by_run),
                                                                     _join_lines)  # fmt: skip


class Exposition:
    """Renders the pipeline's catalogue for ``/metrics`` and ``replay``; with
    ``own_process`` (``runwatch serve``), prometheus-client's collectors of runwatch's own
    process after it, as every exporter has them."""

    def __init__(self, pipeline: Pipeline, own_process: bool = False) -> None:
        self._pipeline = pipeline
        self._metrics = metrics_for(pipeline)
        self._failed = RenderErrors(pipeline.stats, self._metrics)
        self._own: CollectorRegistry | None = None
        if own_process:
            self._own = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._own)
            PlatformCollector(registry=self._own)
            GCCollector(registry=self._own)
        self._formats: dict[TextFormat, _FormatCache] = {}  # two formats, four escapings
        self._deflater = BackgroundDeflater()
        self._lock = threading.Lock()  # one render at a time: they share the caches

    def render(self, accept: str = "", gzip: bool = False) -> tuple[bytes, str]:
        """The exposition the ``Accept`` header asks for (gzipped with ``gzip``), and its
        content type."""
        fmt, content_type, encoder = negotiate(accept)
        with self._lock, self._pipeline.rendering():
            cache = self._formats.get(fmt)
            if cache is None:
                cache = self._formats[fmt] = _FormatCache(self._metrics, fmt, self._run_lines)
            view = self._pipeline.snapshot()
            blocks = cache.runs.blocks(list(view.state.runs.values()))
            # Pieces compressed apart cost some of the ratio: worth it past STITCH_ABOVE,
            # once most are compressed (until then, as after a burst of new runs, the
            # body is compressed whole rather than sent mostly stored)
            size = sum(len(p) for b in blocks for p in b.plain)
            stitch = gzip and size >= STITCH_ABOVE
            if stitch:
                pending = 0
                for pieces in (cache.headers, *blocks):
                    if pieces.compressed is None:
                        self._deflater.compress(pieces)  # stored until then
                        pending += sum(map(len, pieces.plain))
                stitch = 2 * pending <= size
            headers = cache.headers.compressed if stitch else None
            parts: list[tuple[bytes, bytes | None]] = []
            column = 0
            for number, family in enumerate(cache.families):
                parts.append((family.header, headers[number] if headers else None))
                if type(family.metric.sample) is RunSampler:
                    parts += [(b.plain[column], b.compressed[column] if b.compressed else None)
                              for b in blocks]  # fmt: skip
                    column += 1
                else:
                    lines = family.lines(rendered_samples(family.metric, view, self._failed))
                    parts.append((lines, None))
            tail = encoder(self._own) if self._own is not None else b""
            if fmt.openmetrics and self._own is None:
                tail = b"# EOF\n"
            parts.append((tail, None))
            if stitch:
                return gzip_stream(parts), content_type
            body = b"".join(plain for plain, _ in parts)
            if not gzip:
                return body, content_type
            # past STITCH_ABOVE, a body whose pieces are mostly not compressed yet (a burst
            # of changes): compressed whole for this response alone, at zlib's fastest
            level = LEVEL if size < STITCH_ABOVE else BURST_LEVEL
            return compress(body, level, mtime=0), content_type

    def _run_lines(self, families: list[_FamilyText], run: Run) -> tuple[bytes, ...]:
        """The run's lines of each family that samples runs."""
        lines = []
        for family in families:
            of_run = partial(cast(RunSampler, family.metric.sample).of_run, run)
            lines.append(family.lines(checked_samples(family.metric, of_run, self._failed)))
        return tuple(lines)
