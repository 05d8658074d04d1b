"""The thread lifecycle shared by every source that runs on its own clock: the sampled
sources (:class:`~exporter.sources.sampled.sampling.PeriodicSampler`), the WebSocket
followers and the PID-file watcher each subclass :class:`Worker` and implement
``_run``, waiting on ``self._stop`` between rounds so ``stop`` ends them promptly.

A worker never dies of a bug: when ``_run`` raises, the traceback is logged,
``_crashed`` lets the worker say so in its health metric, and ``_run`` starts again
after :data:`RESTART_SECONDS`.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

RESTART_SECONDS = 5.0


class Worker:
    """A daemon thread named ``name`` running ``_run`` from ``start`` until ``stop``."""

    def __init__(self, name: str, join_timeout: float) -> None:
        self._name = name
        self._join_timeout = join_timeout  # a hung call (NVML, a socket) is left behind then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0  # times _run raised and was started again

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.request_stop()
        self.join(self._join_timeout)

    def request_stop(self) -> None:
        """Ask the thread to end, without waiting (stop many at once, then join each)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds (and no longer than the worker's own bound)."""
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, min(timeout, self._join_timeout)))

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self._run()
                return
            except Exception:
                log.exception("%s failed; starting it again in %g s", self._name, RESTART_SECONDS)
                self.restarts += 1
                self._crashed()
            if self._stop.wait(RESTART_SECONDS):
                return

    def _run(self) -> None:
        raise NotImplementedError

    def _crashed(self) -> None:
        """``_run`` raised: make the worker's health metric say it is not working."""
