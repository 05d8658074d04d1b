"""The NVML source opened on a fake NVML, and its readings by device: shared by the NVML
tests in-process (tests/unit) and with real processes (tests/e2e)."""

from __future__ import annotations

from exporter.sources.attribution import no_runs
from exporter.sources.sampled.fake_nvml import FakeNvml
from exporter.sources.sampled.nvml import NvmlSource
from exporter.sources.sampled.samples import GpuSample

GIB = 1 << 30


def open_source(nvml: FakeNvml, roots=no_runs, **options) -> tuple[NvmlSource, list[str]]:
    errors: list[str] = []
    source = NvmlSource(nvml, roots, errors.append, **options)
    source.open()
    return source, errors


def by_index(sample: GpuSample, index: int, gpu_instance: str = ""):
    return next(
        g for g in sample.gpus if g.device.index == index and g.device.gpu_instance == gpu_instance
    )
