"""The NVML source against the fake NVML with real processes: GPU processes attributed to
runs through their process tree. The rest of the source, in-process, is in
tests/unit/test_nvml.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from exporter.sources.sampled.fake_nvml import FakeGpu, FakeNvml, FakeProcess
from tests.nvml_support import GIB, by_index, open_source
from tests.process_tree import start_tree


def test_gpu_processes_are_attributed_to_runs_through_the_process_tree(tmp_path: Path) -> None:
    tree = start_tree(tmp_path)
    try:
        stranger = subprocess.Popen(["sleep", "60"])  # on the GPU, but in no run
        gpu = FakeGpu(processes=[
            FakeProcess(tree.children[0], 3 * GIB, sm_utilization=40),
            FakeProcess(tree.children[1], 5 * GIB, sm_utilization=30),
            FakeProcess(stranger.pid, 7 * GIB, sm_utilization=20),
        ])  # fmt: skip
        other = FakeGpu(processes=[FakeProcess(tree.children[1], GIB)])
        roots = {tree.root.pid: tree.run_id}
        counted: list[dict[str, int]] = []  # what the goodput account is given
        source, _ = open_source(FakeNvml([gpu, other]), roots=lambda: roots,
                                on_run_gpus=counted.append)  # fmt: skip
        sample = source.sample()
        source.close()
    finally:
        tree.kill()
        stranger.kill()
        stranger.wait()
    assert counted == [{tree.run_id: 2}]
    assert len(sample.runs) == 2
    usage = sample.runs[0]
    assert (usage.run_id, usage.device.index, usage.processes) == (tree.run_id, 0, 2)
    assert usage.memory == 8 * GIB
    assert usage.utilization == pytest.approx(0.7)
    assert by_index(sample, 0).processes == 3 and by_index(sample, 1).processes == 1
