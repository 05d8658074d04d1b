"""The system source (real psutil, real processes) and the sampled sources through
``runwatch serve`` and ``runwatch demo``: attribution, failure rules, promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from exporter.sources.attribution import run_trees
from exporter.sources.sampled.system import SystemSource
from tests.process_tree import CHILD_BYTES, start_tree
from tests.support import ROOT, RUNWATCH, free_port, wait_for


@pytest.fixture
def tree(tmp_path: Path):
    tree = start_tree(tmp_path)
    yield tree
    tree.kill()


def test_a_run_owns_its_whole_process_tree(tree) -> None:
    sample = SystemSource(lambda: {tree.root.pid: tree.run_id}).sample()
    (run,) = sample.runs
    assert (run.run_id, run.processes) == (tree.run_id, 3)
    assert run.memory_rss >= 2 * CHILD_BYTES  # both children touched their allocation
    assert run.threads >= 3 and run.file_descriptors >= 9
    assert dict(run.cpu_time)["user"] > 0


def test_a_run_started_inside_another_owns_its_own_subtree(tree) -> None:
    inner = tree.children[0]
    trees = run_trees({tree.root.pid: "outer", inner: "inner"})
    assert [p.pid for p in trees["inner"]] == [inner]
    assert sorted(p.pid for p in trees["outer"]) == sorted([tree.root.pid, tree.children[1]])


def test_serve_attributes_a_live_process_tree_and_follows_it(serve, tree) -> None:
    server = serve("--pid-file", str(tree.pid_file), "--system-interval", "0.2", "--no-nvml")
    run = f'{{run_id="{tree.run_id}"}}'
    wait_for(lambda: server.sample(f"training_run_processes{run}") == 3, what="3 processes")
    assert server.sample(f"training_run_process_memory_usage_bytes{run}") >= 2 * CHILD_BYTES
    assert server.sample(f'training_run_process_cpu_time_seconds_total{{cpu_mode="user",run_id='
                         f'"{tree.run_id}"}}') > 0  # fmt: skip
    assert server.sample(f"training_process_up{run}") == 1
    assert server.sample('runwatch_source_up{source="system"}') == 1
    assert 'source="nvml"' not in server.metrics()  # --no-nvml: no such source at all
    tree.kill_child(tree.children[0])
    wait_for(lambda: server.sample(f"training_run_processes{run}") == 2, what="a child gone")
    assert server.sample(f"training_run_process_memory_usage_bytes{run}") < 2 * CHILD_BYTES


def nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_serve_without_a_gpu_driver_reports_nvml_down_once_and_runs_on(serve) -> None:
    server = serve("--gpu-interval", "0.2", "--system-interval", "0.2")
    wait_for(lambda: server.sample('runwatch_source_up{source="system"}') == 1, what="system")
    expected = 1.0 if nvml_works() else 0.0
    assert server.sample('runwatch_source_up{source="nvml"}') == expected
    if not expected:
        log = server.log.read_text()
        assert log.count("nvml source unavailable: NVML cannot start") == 1, log
        assert "Traceback" not in log
        assert "gpu_info{" not in server.metrics()


def test_exposition_with_gpus_mig_xids_and_processes_passes_promtool(
    serve, tree, bin_dir: Path
) -> None:
    server = serve("--pid-file", str(tree.pid_file), "--fake-gpus", "3", "--gpu-interval", "0.2",
                   "--system-interval", "0.2", "--gpu-pcie-throughput")  # fmt: skip
    wait_for(lambda: "gpu_pcie_throughput_bytes_per_second{" in (text := server.metrics())
             and "training_run_process_memory_usage_bytes{" in text,
             what="all readings")  # fmt: skip
    text = server.metrics()
    assert text.count("gpu_info{") == 3
    lint = subprocess.run([bin_dir / "promtool", "check", "metrics"], input=text.encode(),
                          capture_output=True)  # fmt: skip
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, b"", b"")


def test_demo_with_fake_gpus_shows_the_run_on_its_gpus(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [*RUNWATCH, "demo", "--fake-gpus", "2", "--listen", f"127.0.0.1:{port}",
         "--gpu-interval", "0.2", "--system-interval", "0.2", "--event-interval", "0.05"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:

        def per_run_gpu_lines() -> list[str]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            return [line for line in text.splitlines()
                    if line.startswith("training_run_gpu_memory_bytes{")]  # fmt: skip

        lines = wait_for(lambda: len(per_run_gpu_lines()) == 2 and per_run_gpu_lines(),
                         what="the demo run on both fake GPUs")  # fmt: skip
        assert all('run_id="demo_' in line for line in lines)
        assert {line.split('gpu="')[1][0] for line in lines} == {"0", "1"}
    finally:
        demo.terminate()
        demo.wait(timeout=15)
        log.close()
