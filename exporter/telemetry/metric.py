"""What a catalogue entry is, and how its OTel name and attributes map to Prometheus.

Two OTLP namings (``--otlp-naming``):

- ``semconv`` (default): the OTel semantic-convention name where one exists
  (``hw.gpu.utilization``, ``hw.power``, ``process.cpu.time``), with the
  convention's attributes (``hw.id``, ``hw.type``, ``hw.gpu.task``,
  ``error.type``). Several ``/metrics`` families can share one OTel metric
  (``hw.errors`` carries ECC, PCIe replay and XID errors).
- ``prometheus``: every metric under a name whose standard OTLP→Prometheus
  translation (:func:`prometheus_name`) is exactly its ``/metrics`` name, and only
  the ``/metrics`` labels, so dashboards and alerts serve both paths unchanged.

Metrics that have no semantic-convention name (all ``training_*``, most of
``runwatch_*``) have the same OTel name in both namings.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from exporter.core.outputs import Histogram
from exporter.core.state import Run
from exporter.pipeline import View
from exporter.pipeline.self_stats import Stats

log = logging.getLogger(__name__)

NAMINGS = ("semconv", "prometheus")


class Type(Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


Sample = tuple[tuple[str, ...], Any]
Sampler = Callable[[View], Iterable[Sample]]


class RunSampler:
    """A sampler whose samples each belong to one run: ``of_run`` gives one run's, and the
    sampler as a whole every run's in turn. Outputs that keep what they rendered of a run
    until it changes (:class:`~exporter.telemetry.run_cache.RunCache`) call ``of_run``."""

    __slots__ = ("of_run",)

    def __init__(self, of_run: Callable[[Run], Iterable[Sample]]) -> None:
        self.of_run = of_run

    def __call__(self, view: View) -> Iterator[Sample]:
        of_run = self.of_run
        for run in view.state.runs.values():
            yield from of_run(run)


def stats_counter(select: Callable[[Stats], Counter[Any]]) -> Sampler:
    """Samples from one of runwatch's own counters
    (:class:`~exporter.pipeline.self_stats.Stats`)."""

    def sample(view: View) -> Iterator[Sample]:
        for key, count in view.stats.snapshot(select(view.stats)):
            yield (key if isinstance(key, tuple) else (key,)), count

    return sample


@dataclass(frozen=True, slots=True)
class Metric:
    name: str  # on /metrics (counters with their _total)
    otel_name: str  # semantic-convention name where there is one
    unit: str  # UCUM, as given to the OTel instrument
    type: Type
    labels: tuple[str, ...]  # OTel attribute keys; on /metrics as prometheus_label(key)
    help: str
    sample: Sampler
    buckets: tuple[float, ...] = ()  # histogram bucket bounds, shared with the state
    # semconv naming only: constant attributes, and the hw.type whose hw.id is the uuid label
    semconv_attributes: tuple[tuple[str, str], ...] = ()
    hw_type: str = ""

    @property
    def prometheus_labels(self) -> list[str]:
        return [prometheus_label(key) for key in self.labels]

    def otel_name_for(self, naming: str) -> str:
        if naming == "semconv" or (
            not self.semconv_attributes
            and not self.hw_type
            and prometheus_name(self.otel_name, self.unit, self.type) == self.name
            # translators differ on unit "1": only a name that says "ratio" is safe
            and (self.unit != "1" or "ratio" in self.otel_name)
        ):
            return self.otel_name
        name = self.name.removesuffix("_total") if self.type is Type.COUNTER else self.name
        # the translation appends a per-unit ("_per_second") whenever the unit has one: it
        # looks for it as a single name token, which an underscore-split name never holds
        return name.removesuffix(_per_suffix(self.unit))

    def otel_attributes(self, label_values: tuple[str, ...], naming: str) -> dict[str, str]:
        attributes = dict(zip(self.labels, label_values, strict=True))
        if naming == "semconv":
            attributes.update(self.semconv_attributes)
            if self.hw_type:
                attributes["hw.type"] = self.hw_type
                attributes["hw.id"] = attributes["uuid"]
        return attributes


_UNIT_WORDS = {
    "s": "seconds", "By": "bytes", "Cel": "celsius", "W": "watts", "J": "joules", "Hz": "hertz",
}  # fmt: skip
_PER_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour"}


def _split_unit(unit: str) -> tuple[str, str]:
    """A UCUM unit's main part and per-part, annotations (``{...}``) left out."""
    main, _, per = re.sub(r"\{[^}]*\}", "", unit).partition("/")
    return main, per


def _per_suffix(unit: str) -> str:
    """``_per_second`` for ``By/s``; empty for a unit without a per-part."""
    per = _split_unit(unit)[1]
    return f"_per_{_PER_UNIT_WORDS.get(per, per)}" if per else ""


def prometheus_name(otel_name: str, unit: str, type_: Type) -> str:
    """The OTLP→Prometheus name translation as Prometheus 3 (its default
    ``UnderscoreEscapingWithSuffixes``) and the collector's remote-write exporter make it
    (prometheus/otlptranslator's ``normalizeName``): the name split into tokens at every
    character but letters, digits and ``:``; the unit's word appended unless a token is
    that word; a per-unit (``By/s``: ``_per_second``) always appended; ``_total`` last on
    monotonic sums and ``_ratio`` on unit-``1`` gauges, each moved to the end."""
    tokens = [token for token in re.split(r"[^a-zA-Z0-9:]+", otel_name) if token]
    word = _UNIT_WORDS.get(_split_unit(unit)[0], "")
    if word and word not in tokens:
        tokens.append(word)
    tokens += _per_suffix(unit).split("_")[1:]  # ["per", "second"], or nothing
    if type_ is Type.COUNTER:
        tokens = [token for token in tokens if token != "total"] + ["total"]
    if unit == "1" and type_ is Type.GAUGE:
        tokens = [token for token in tokens if token != "ratio"] + ["ratio"]
    return "_".join(tokens)


def prometheus_label(key: str) -> str:
    """An attribute key as a Prometheus label: ``cpu.mode`` -> ``cpu_mode``."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


class RenderErrors:
    """What a collection had to leave out: counted by family in
    ``runwatch_render_errors_total`` and logged once per family, so one value that cannot
    be rendered costs its sample, never the scrape."""

    def __init__(self, stats: Stats, metrics: Iterable[Metric]) -> None:
        self._stats = stats
        self._logged: set[str] = set()
        # every family's series starts at 0, so increase() sees the first error
        stats.declare(stats.render_errors, [metric.name for metric in metrics])

    def __call__(self, metric: Metric, exc: Exception) -> None:
        self._stats.count(self._stats.render_errors, metric.name)
        if metric.name not in self._logged:
            self._logged.add(metric.name)
            log.error("%s: a sample could not be rendered and is left out (%s: %s)",
                      metric.name, type(exc).__name__, exc)  # fmt: skip


def rendered_samples(metric: Metric, view: View, failed: RenderErrors) -> list[Sample]:
    """The metric's samples in a form every output can encode: label values as strings,
    values as floats (a Histogram for histograms). A sample that cannot be converted is left
    out; a sampler that raises loses its whole family for this collection; both are
    reported to ``failed``."""
    return checked_samples(metric, lambda: metric.sample(view), failed)


def checked_samples(
    metric: Metric, sample: Callable[[], Iterable[Sample]], failed: RenderErrors
) -> list[Sample]:
    """What ``sample()`` gives, checked and converted as :func:`rendered_samples` says."""
    width = len(metric.labels)
    convert = _histogram if metric.type is Type.HISTOGRAM else float
    samples: list[Sample] = []
    append = samples.append
    try:
        for labels, value in sample():
            try:
                if len(labels) != width:
                    raise TypeError(f"{len(labels)} label values for {width} labels")
                text = "".join(labels)  # TypeError unless every label value is a string
                if not text.isascii():
                    text.encode()  # UnicodeEncodeError (a ValueError): a lone surrogate
                append((labels, convert(value)))  # float(): OverflowError past a float
            except (TypeError, ValueError, OverflowError) as exc:
                failed(metric, exc)
    except Exception as exc:  # a sampler bug costs its family, not the scrape
        failed(metric, exc)
        return []
    return samples


def _histogram(value: Any) -> Histogram:
    if not isinstance(value, Histogram):
        raise TypeError(f"{type(value).__name__} is not a Histogram")
    float(value.total)
    return value
