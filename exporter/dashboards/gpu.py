"""GPUs and the host (what dcgm-exporter's dashboard shows, plus GPU use per run)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, table, timeseries

from exporter.dashboards.names import metric
from exporter.dashboards.style import RATE, SEL, board, query, selected, styled

GPU = f'{SEL}, gpu=~"$gpu"'


def _series(title: str, unit: str, expr: str, legend: str = "GPU {{gpu}}") -> timeseries.Panel:
    return styled(timeseries.Panel(), title, unit, [query(expr, legend)])


def _gpu(name: str) -> str:
    """The metric's series of the GPUs picked."""
    return f"{metric(name)}{{{GPU}}}"


def build() -> dashboard.Dashboard:
    memory = styled(
        timeseries.Panel(),
        "GPU MEMORY",
        "bytes",
        [
            query(_gpu("gpu_memory_used_bytes"), "used {{gpu}} {{gpu_instance}}"),
            query(_gpu("gpu_memory_total_bytes"), "total {{gpu}} {{gpu_instance}}"),
        ],
    )
    power = styled(
        timeseries.Panel(),
        "POWER",
        "watt",
        [
            query(_gpu("gpu_power_draw_watts"), "draw {{gpu}}"),
            query(_gpu("gpu_power_limit_watts"), "limit {{gpu}}"),
        ],
    )
    clocks = styled(
        timeseries.Panel(),
        "CLOCKS",
        "hertz",
        [
            query(_gpu("gpu_sm_clock_hertz"), "SM {{gpu}}"),
            query(_gpu("gpu_memory_clock_hertz"), "memory {{gpu}}"),
        ],
    )
    errors = styled(
        table.Panel(),
        "ERRORS (XID, ECC, PCIe replays)",
        "none",
        [
            query(f"sum by (gpu, xid) ({_gpu('gpu_xid_errors_total')})", table=True),
            query(f"sum by (gpu, error_type) ({_gpu('gpu_ecc_errors_total')})", table=True),
            query(f"sum by (gpu) ({_gpu('gpu_pcie_replays_total')})", table=True),
        ],
    )
    per_run = styled(
        timeseries.Panel(),
        "GPU MEMORY PER RUN",
        "bytes",
        [
            query(
                f"sum by (run_id, gpu) ({_gpu('training_run_gpu_memory_bytes')})",
                "{{run_id}} on {{gpu}}",
            ),
        ],
    )
    per_run_util = _series(
        "GPU UTILISATION PER RUN",
        "percentunit",
        _gpu("training_run_gpu_utilization_ratio"),
        "{{run_id}} on {{gpu}}",
    )
    host_cpu = _series(
        "HOST CPU",
        "percentunit",
        metric("system_cpu_utilization_ratio") + f'{{{SEL}, cpu_mode!="idle"}}',
        "{{cpu_mode}}",
    )
    host_memory = _series(
        "HOST MEMORY",
        "bytes",
        selected("system_memory_usage_bytes"),
        "{{system_memory_state}}",
    )
    cpu_time = selected("training_run_process_cpu_time_seconds_total")
    processes = styled(
        timeseries.Panel(),
        "RUN PROCESSES (CPU)",
        "percentunit",
        [
            query(
                f"sum by (run_id) (rate({cpu_time}[{RATE}]))",
                "{{run_id}}",
            ),
        ],
    )
    return board(
        "runwatch-gpu",
        "runwatch / GPUs and system",
        "NVML readings per GPU (and MIG device), which run uses which GPU, the host.",
        ["job", "instance", "gpu"],
        [
            (
                8,
                [
                    _series("GPU UTILISATION", "percentunit", _gpu("gpu_utilization_ratio")),
                    memory,
                    _series("TEMPERATURE", "celsius", _gpu("gpu_temperature_celsius")),
                ],
            ),
            (
                8,
                [
                    power,
                    clocks,
                    _series(
                        "THROTTLE REASONS",
                        "none",
                        _gpu("gpu_clock_event_reasons"),
                        "{{gpu}} {{reason}}",
                    ),
                ],
            ),
            (8, [per_run, per_run_util, errors]),
            (8, [host_cpu, host_memory, processes]),
        ],
    )
