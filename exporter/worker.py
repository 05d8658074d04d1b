"""The thread lifecycle shared by every source that runs on its own clock: the sampled
sources (:class:`~exporter.sampling.PeriodicSampler`), the WebSocket followers and the
PID-file watcher each subclass :class:`Worker` and implement ``_run``, waiting on
``self._stop`` between rounds so ``stop`` ends them promptly."""

from __future__ import annotations

import threading


class Worker:
    """A daemon thread named ``name`` running ``_run`` from ``start`` until ``stop``."""

    def __init__(self, name: str, join_timeout: float) -> None:
        self._name = name
        self._join_timeout = join_timeout  # a hung call (NVML, a socket) is left behind then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._join_timeout)

    def _run(self) -> None:
        raise NotImplementedError
