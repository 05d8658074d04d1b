"""The seam between the sources and the outputs, and what both share.

The floor above ``core/`` and below ``sources/`` and ``telemetry/``: the
:class:`Pipeline` (the one lock, applying events to the pure reducers and handing
their outputs on), the :class:`View` the outputs render, how outputs go out
(:mod:`~exporter.pipeline.emit`, with the file receipts of
:mod:`~exporter.pipeline.delivery`), the cache the sampled sources write
(:mod:`~exporter.pipeline.readings`), runwatch's own counters
(:mod:`~exporter.pipeline.self_stats`), the source names, and the one way every
reader opens a file (:mod:`~exporter.pipeline.regular_files`). Nothing here imports
a source or an output.
"""

from exporter.pipeline.emit import AGAIN, EVERYTHING, NOTHING, Emit, OutputSink
from exporter.pipeline.pipeline import Pipeline
from exporter.pipeline.view import View

__all__ = ["AGAIN", "EVERYTHING", "NOTHING", "Emit", "OutputSink", "Pipeline", "View"]
