"""The ``source`` label of runwatch's own counters: which input an event, a rejection or
a leniency came through."""

JSONL_SOURCE = "jsonl"
HTTP_SOURCE = "http"
EVENT_SOURCES: tuple[str, ...] = (JSONL_SOURCE, HTTP_SOURCE)
PID_FILE_SOURCE = "pid_file"
BRIDGE_SOURCE = "bridge"
BACKEND_SOURCE = "backend"
ROUTER_SOURCE = "router"
