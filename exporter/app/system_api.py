"""The host and its GPUs as the training-dashboard format's system routes show them:
``GET /api/system/status`` (the latest fresh readings) and ``GET /api/system/history``
(each sampled source's last ``HISTORY_SAMPLES`` readings, an hour at the default 5 s
interval; Prometheus keeps the rest). Percentages as that format prints them, bytes,
degrees Celsius and watts as the sources read them; null where a reading is missing."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import APIRouter

from exporter.pipeline import Pipeline
from exporter.pipeline.readings import HISTORY_SAMPLES, Readings
from exporter.sources.sampled.nvml import NVML_SOURCE
from exporter.sources.sampled.samples import GpuSample, HostReading, SystemSample
from exporter.sources.sampled.system import SYSTEM_SOURCE


def system_routes(pipeline: Pipeline) -> APIRouter:
    router = APIRouter()

    @router.api_route("/api/system/status", methods=["GET", "HEAD"])
    def status() -> dict[str, Any]:
        readings = pipeline.snapshot().readings
        system, gpus = readings.latest(SystemSample), readings.latest(GpuSample)
        return {
            "host": host_json(system.host) if system else None,
            "gpus": gpus_json(gpus) if gpus else [],
            "sources": sources_json(readings),
        }

    @router.api_route("/api/system/history", methods=["GET", "HEAD"])
    def history() -> dict[str, Any]:
        cache = pipeline.readings
        return {
            "host": [{"timestamp": at, **host_json(sample.host)}
                     for at, sample in cache.history(SYSTEM_SOURCE)
                     if isinstance(sample, SystemSample)],
            "gpus": [{"timestamp": at, "gpus": gpus_json(sample)}
                     for at, sample in cache.history(NVML_SOURCE)
                     if isinstance(sample, GpuSample)],
            "max_samples": HISTORY_SAMPLES,
        }  # fmt: skip

    return router


def sources_json(readings: Readings, names: Collection[str] | None = None) -> dict[str, Any]:
    """Whether each sampled source (or each of ``names``) is up, and when it last read."""
    return {name: {"up": s.up, "sampled_at": s.sampled_at}
            for name, s in readings.sources.items() if names is None or name in names}  # fmt: skip


def host_json(host: HostReading) -> dict[str, Any]:
    """``cpu_percent`` (busy: all modes but idle and iowait) and ``memory_percent`` (not
    available), as the format's system table has them, and the bytes behind the latter."""
    modes = dict(host.cpu_utilization)
    busy = 1 - modes.get("idle", 0.0) - modes.get("iowait", 0.0) if modes else None
    used = host.memory_limit - host.memory_available
    return {
        "cpu_percent": None if busy is None else round(100 * busy, 2),
        "memory_percent": round(100 * used / host.memory_limit, 2) if host.memory_limit else None,
        "memory_used": used,
        "memory_total": host.memory_limit,
        "cpu_count": host.cpu_count,
    }


def gpus_json(sample: GpuSample) -> list[dict[str, Any]]:
    return [
        {
            "index": gpu.device.index,
            "uuid": gpu.device.uuid,
            "name": gpu.device.name,
            "gpu_instance": gpu.device.gpu_instance,
            "utilization_percent": None if gpu.utilization is None else 100 * gpu.utilization,
            "memory_used": gpu.memory_used,
            "memory_total": gpu.memory_total,
            "temperature": gpu.temperature,
            "power": gpu.power,
        }
        for gpu in sample.gpus
    ]
