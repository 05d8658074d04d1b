"""compose.scale.yaml's collector tier for real: two runwatch nodes, named by their OTel
resource as compose names them, push OTLP to the gateway collector
(otel-collector/gateway.yaml), which remote-writes to VictoriaMetrics (vminsert's place:
VictoriaMetrics' single binary takes the same remote write) and sends spans on to Tempo's
address (a stand-in receiver: Tempo is an AGPL program these machines do not build). Each
node's series arrive under the /metrics names with the node as their `instance`."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml

from tests.receivers import GrpcTraceReceiver, OtlpReceiver
from tests.stack import Program, collector
from tests.support import ROOT, RUNWATCH, free_port, wait_for

pytestmark = pytest.mark.timeout(180)


def test_the_gateway_tier_keeps_each_nodes_identity(bin_dir: Path, tmp_path: Path) -> None:
    services = yaml.safe_load((ROOT / "compose.scale.yaml").read_text())["services"]
    nodes = {name: s for name, s in services.items() if "--otlp-naming=prometheus" in
             (s.get("command") or [])}  # fmt: skip
    assert set(nodes) == {"node-a", "node-b"}
    tempo, loki = GrpcTraceReceiver(), OtlpReceiver()
    vm_port = free_port()
    vm = f"http://127.0.0.1:{vm_port}"
    programs = [Program(
        [bin_dir / "victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}",
         f"-storageDataPath={tmp_path / 'vm'}", "-search.latencyOffset=0s"],
        tmp_path / "vm.log", vm + "/health", "VictoriaMetrics",
    )]  # fmt: skip
    try:
        gateway, otlp_http, _ = collector(
            bin_dir, tmp_path, "gateway.yaml", traces_to=tempo.url.removeprefix("http://"),
            logs_to=loki.url, metrics_to=vm + "/api/v1/write",
        )  # fmt: skip
        programs.append(gateway)
        for name, node in nodes.items():
            environment = {
                **os.environ,
                **node["environment"],
                "OTEL_METRIC_EXPORT_INTERVAL": "500",
            }
            events = tmp_path / f"{name}.jsonl"
            events.write_text(f'{{"event_type": "run_start", "run_id": "{name}_run", '
                              f'"timestamp": 1700000000.0}}\n')  # fmt: skip
            port = free_port()
            programs.append(Program(
                [*RUNWATCH, "serve", "--web.listen-address", f"127.0.0.1:{port}",
                 "--events", str(events), "--fake-gpus", "1", "--gpu-interval", "0.5",
                 "--otlp-endpoint", otlp_http, "--otlp-naming", "prometheus"],
                tmp_path / f"{name}.log", f"http://127.0.0.1:{port}/healthz", name,
                env=environment,
            ))  # fmt: skip

        def instances() -> dict[str, dict[str, str]]:
            httpx.get(vm + "/internal/force_flush")
            selector = {"match[]": "gpu_temperature_celsius"}
            series = httpx.get(vm + "/api/v1/series", params=selector).json()["data"]
            found = {s["instance"]: s for s in series}
            return found if set(found) >= set(nodes) else {}

        found = wait_for(instances, timeout=60, what="both nodes' GPU series in VictoriaMetrics")
        for name in nodes:
            assert found[name]["job"] == "runwatch" and found[name]["host_name"] == name
        runs = httpx.get(vm + "/api/v1/series",
                         params={"match[]": "training_run_info"}).json()["data"]  # fmt: skip
        assert {(s["instance"], s["run_id"]) for s in runs} >= {(n, f"{n}_run") for n in nodes}
    finally:
        for program in reversed(programs):
            program.stop()
        tempo.stop()
        loki.stop()
