"""A webhook receiver for Alertmanager that prints each notification's alerts, one line
each, so the compose stack's alerts land where a person reads them
(``docker compose logs -f alert-log``) before a real receiver is configured:

    FIRING critical RunwatchRunCrashed run_id=demo_1 instance=runwatch:19464 | Run demo_1 crashed.

``python -m exporter.simulate.alert_log --listen 0.0.0.0:9095``; Alertmanager posts its webhook
payload (version 4) to ``/alerts``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from exporter.app.help_text import plain

log = logging.getLogger("exporter.simulate.alert_log")
SHOWN_LABELS = ("run_id", "gpu", "instance", "job")


def alert_line(alert: dict[str, Any]) -> str:
    """One alert of a webhook payload as one readable line."""
    labels = alert.get("labels") or {}
    shown = " ".join(f"{key}={labels[key]}" for key in SHOWN_LABELS if key in labels)
    summary = (alert.get("annotations") or {}).get("summary", "")
    status = str(alert.get("status", "?")).upper()
    return (
        f"{status} {labels.get('severity', '-')} {labels.get('alertname', '?')} {shown} | {summary}"
    )


def create_app() -> FastAPI:
    app = FastAPI(title="runwatch alert log")

    @app.post("/alerts")
    async def alerts(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
            lines = [alert_line(alert) for alert in payload["alerts"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": "not an Alertmanager webhook payload"}, 400)
        for line in lines:
            log.info("%s", line)
        return JSONResponse({"received": len(lines)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", default="127.0.0.1:9095", help="HOST:PORT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(create_app(), host=host, port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
