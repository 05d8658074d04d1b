"""The run API's read side, in process: the routes and shapes the training-dashboard format
prints, 404 with a JSON error for an unknown id, 405 pointing at the events for its write
side, and ids and text that are hostile input."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from exporter import __version__
from exporter.app.run_api import READ_ONLY, WRITE_ROUTES
from exporter.app.server import create_app
from exporter.pipeline import Pipeline
from tests.support import T0, event

HOSTILE = 'a/b <script>alert("x")</script> é'


@pytest.fixture
def client() -> TestClient:
    pipeline = Pipeline()
    app = create_app(pipeline)  # keeps the metric windows from now on

    def checkpoint(ts: float, checkpoint_id: str, step: int, **fields: object) -> dict:
        return event("checkpoint_saved", ts=ts, checkpoint_id=checkpoint_id, step=step, **fields)

    events = [
        event("run_start", ts=T0, name="exp", config={"lr": 0.1}),
        event("metric_update", ts=T0 + 1, step=10, metrics={"loss": 0.5, "lr": 0.1}),
        checkpoint(T0 + 2, "ckpt_1", 10, metrics={"loss": 0.5}, filepath="/c/1.pt"),
        event("metric_update", ts=T0 + 3, step=20, metrics={"loss": "NaN"}),
        checkpoint(T0 + 4, "ckpt_2", 20, metrics={"loss": 0.25}, is_best=True),
        event("run_start", run_id=HOSTILE, ts=T0, name=HOSTILE),
        checkpoint(T0 + 9, "ckpt_1", 1, run_id=HOSTILE),
    ]
    assert pipeline.ingest_lines([orjson.dumps(e) for e in events], "http") == []
    return TestClient(app)


def test_a_run_its_latest_metrics_and_its_checkpoints(client: TestClient) -> None:
    runs = client.get("/api/runs").json()
    assert {r["run_id"] for r in runs} == {"run_1", HOSTILE}
    run = client.get("/api/runs/run_1").json()
    assert run == next(r for r in runs if r["run_id"] == "run_1")
    assert run["name"] == "exp" and run["config"] == {"lr": 0.1} and run["status"] == "running"
    latest = client.get("/api/runs/run_1/metrics/latest").json()
    assert latest == {"run_id": "run_1", "step": 20, "metrics": {"loss": "NaN", "lr": 0.1},
                      "timestamp": T0 + 4}  # fmt: skip
    checkpoints = client.get("/api/runs/run_1/checkpoints").json()
    assert [(c["checkpoint_id"], c["step"], c["is_best"]) for c in checkpoints] == [
        ("ckpt_1", 10, False), ("ckpt_2", 20, True)]  # fmt: skip
    assert checkpoints == run["checkpoints"]


def test_a_checkpoint_by_id_is_the_latest_run_naming_it(client: TestClient) -> None:
    found = client.get("/api/checkpoints/ckpt_1").json()
    assert found["run_id"] == HOSTILE and found["step"] == 1  # saved at T0 + 9, after run_1's
    assert client.get("/api/checkpoints/ckpt_2").json()["run_id"] == "run_1"
    asked = client.get("/api/checkpoints/ckpt_1", params={"run_id": "run_1"}).json()
    assert asked["run_id"] == "run_1" and asked["step"] == 10


def test_a_hostile_run_id_is_an_id_like_any_other(client: TestClient) -> None:
    """Slashes, markup and non-ASCII text in an id: found by its URL-encoded path, served
    as JSON text (never markup)."""
    from urllib.parse import quote

    answer = client.get("/api/runs/" + quote(HOSTILE, safe=""))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json()["name"] == HOSTILE
    assert client.get("/api/runs/" + quote(HOSTILE, safe="") + "/checkpoints").json()[0][
        "checkpoint_id"] == "ckpt_1"  # fmt: skip


@pytest.mark.parametrize(
    "path",
    ["/api/runs/nope", "/api/runs/nope/metrics/latest", "/api/runs/nope/checkpoints",
     "/api/checkpoints/nope"],
)  # fmt: skip
def test_an_unknown_id_is_a_404_with_a_json_error(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404
    assert "'nope'" in answer.json()["error"]


def test_the_write_side_answers_405_and_points_to_the_events(client: TestClient) -> None:
    for path, method, allowed in WRITE_ROUTES:
        concrete = path.replace("{run_id:path}", "run_1").replace(
            "{checkpoint_id:path}", "ckpt_1")  # fmt: skip
        answer = client.request(method, concrete, json={"name": "x"})
        assert answer.status_code == 405, (method, concrete)
        assert answer.json() == {"error": READ_ONLY}
        assert answer.headers["allow"] == allowed
    assert "POST /v1/events" in READ_ONLY
    for method, path in [("PATCH", "/api/runs/run_1"), ("DELETE", "/api/runs"),
                         ("POST", "/api/runs/run_1/metrics/latest")]:  # fmt: skip
        other = client.request(method, path)
        assert other.status_code == 405 and other.json() == {"error": READ_ONLY}, path
        assert "GET" in other.headers["allow"]
    assert client.get("/api/runs/run_1").json()["name"] == "exp"  # nothing changed


def test_health_and_version(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "version": __version__}
    assert client.get("/api/version").json() == {"version": __version__, "api_version": 1}


def test_the_history_by_step_as_rows_columns_and_csv(client: TestClient) -> None:
    history = client.get("/api/runs/run_1/metrics").json()
    assert history["keys"] == ["loss", "lr"] and history["stride"] == 1
    assert history["steps_logged"] == history["rows"] == 2
    assert history["metrics"] == [
        {"step": 10, "timestamp": T0 + 1, "metrics": {"loss": 0.5, "lr": 0.1}},
        {"step": 20, "timestamp": T0 + 3, "metrics": {"loss": "NaN"}},  # lr not logged
    ]
    columns = client.get("/api/runs/run_1/metrics",
                         params={"layout": "columns", "keys": "lr"}).json()  # fmt: skip
    assert columns["step"] == [10, 20] and columns["values"] == {"lr": [0.1, None]}
    ranged = client.get("/api/runs/run_1/metrics", params={"min_step": 15}).json()
    assert [row["step"] for row in ranged["metrics"]] == [20]
    csv = client.get("/api/runs/run_1/metrics", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert 'filename="run_1.csv"' in csv.headers["content-disposition"]
    assert csv.text == f"step,timestamp,loss,lr\n10,{T0 + 1!r},0.5,0.1\n20,{T0 + 3!r},NaN,\n"
    assert client.get("/api/runs/nope/metrics").status_code == 404
    assert client.get("/api/runs/run_1/metrics", params={"max_points": 1}).status_code == 422


def test_csv_headers_are_neither_formulas_nor_the_fixed_columns() -> None:
    pipeline = Pipeline()
    client = TestClient(create_app(pipeline))
    metrics = {"step": 1.0, "=HYPERLINK(1)": 2.0, "-x": 3.0}
    lines = [orjson.dumps(event("metric_update", ts=T0, step=1, metrics=metrics))]
    assert pipeline.ingest_lines(lines, "http") == []
    header = client.get("/api/runs/run_1/metrics", params={"format": "csv"}).text.split("\n")[0]
    assert header == "step,timestamp,metrics.step,'=HYPERLINK(1),'-x"
