"""GPUs and the host (what dcgm-exporter's dashboard shows, plus GPU use per run)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, table, timeseries

from exporter.dashboards.style import RATE, SEL, board, query, styled

GPU = f'{SEL}, gpu=~"$gpu"'


def _series(title: str, unit: str, expr: str, legend: str = "GPU {{gpu}}") -> timeseries.Panel:
    return styled(timeseries.Panel(), title, unit, [query(expr, legend)])


def build() -> dashboard.Dashboard:
    memory = styled(
        timeseries.Panel(),
        "GPU MEMORY",
        "bytes",
        [
            query(f"gpu_memory_used_bytes{{{GPU}}}", "used {{gpu}} {{gpu_instance}}"),
            query(f"gpu_memory_total_bytes{{{GPU}}}", "total {{gpu}} {{gpu_instance}}"),
        ],
    )
    power = styled(
        timeseries.Panel(),
        "POWER",
        "watt",
        [
            query(f"gpu_power_draw_watts{{{GPU}}}", "draw {{gpu}}"),
            query(f"gpu_power_limit_watts{{{GPU}}}", "limit {{gpu}}"),
        ],
    )
    clocks = styled(
        timeseries.Panel(),
        "CLOCKS",
        "hertz",
        [
            query(f"gpu_sm_clock_hertz{{{GPU}}}", "SM {{gpu}}"),
            query(f"gpu_memory_clock_hertz{{{GPU}}}", "memory {{gpu}}"),
        ],
    )
    errors = styled(
        table.Panel(),
        "ERRORS (XID, ECC, PCIe replays)",
        "none",
        [
            query(f"sum by (gpu, xid) (gpu_xid_errors_total{{{GPU}}})", table=True),
            query(f"sum by (gpu, error_type) (gpu_ecc_errors_total{{{GPU}}})", table=True),
            query(f"sum by (gpu) (gpu_pcie_replays_total{{{GPU}}})", table=True),
        ],
    )
    per_run = styled(
        timeseries.Panel(),
        "GPU MEMORY PER RUN",
        "bytes",
        [
            query(
                f"sum by (run_id, gpu) (training_run_gpu_memory_bytes{{{GPU}}})",
                "{{run_id}} on {{gpu}}",
            ),
        ],
    )
    per_run_util = _series(
        "GPU UTILISATION PER RUN",
        "percentunit",
        f"training_run_gpu_utilization_ratio{{{GPU}}}",
        "{{run_id}} on {{gpu}}",
    )
    host_cpu = _series(
        "HOST CPU",
        "percentunit",
        f'system_cpu_utilization_ratio{{{SEL}, cpu_mode!="idle"}}',
        "{{cpu_mode}}",
    )
    host_memory = _series(
        "HOST MEMORY", "bytes", f"system_memory_usage_bytes{{{SEL}}}", "{{system_memory_state}}"
    )
    processes = styled(
        timeseries.Panel(),
        "RUN PROCESSES (CPU)",
        "percentunit",
        [
            query(
                "sum by (run_id) "
                f"(rate(training_run_process_cpu_time_seconds_total{{{SEL}}}[{RATE}]))",
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
                    _series("GPU UTILISATION", "percentunit", f"gpu_utilization_ratio{{{GPU}}}"),
                    memory,
                    _series("TEMPERATURE", "celsius", f"gpu_temperature_celsius{{{GPU}}}"),
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
                        f"gpu_clock_event_reasons{{{GPU}}}",
                        "{{gpu}} {{reason}}",
                    ),
                ],
            ),
            (8, [per_run, per_run_util, errors]),
            (8, [host_cpu, host_memory, processes]),
        ],
    )
