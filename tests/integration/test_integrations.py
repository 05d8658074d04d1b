"""The framework callbacks, on the real frameworks: a PyTorch Lightning fit and a Hugging Face
Trainer run on the CPU, reported through a FileTransport and read back by runwatch's
pipeline. Skipped, saying why, where the frameworks are not installed (scripts/test installs
them where the CPU build of torch is on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest

# scripts/test installs torch from PyPI (its build runs on a CPU): these tests never skip
import torch
from runwatch_sdk import FileTransport, TrainingMonitor

from exporter.core.state import Run
from exporter.pipeline import Pipeline


def only_run(events: Path) -> Run:
    pipeline = Pipeline()
    assert pipeline.ingest_lines(events.read_bytes().splitlines(), "jsonl") == []
    (run,) = pipeline.state.runs.values()
    return run


def regression_data() -> tuple[object, object]:
    """32 points of y = 2 x0 - x1, the same every run."""
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    return x, x @ torch.tensor([[2.0], [-1.0]])


def best_path(run: Run) -> str | None:
    return next((c.filepath for c in run.checkpoints.values() if c.is_best), None)


# -- PyTorch Lightning --


def lightning_fit(tmp_path: Path, callback: object, fail_at: int | None = None) -> object:
    pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed")
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Regression(pl.LightningModule):
        def __init__(self, lr: float = 0.05, fail_at: int | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            if self.global_step == self.hparams.fail_at:
                raise RuntimeError("loss exploded")
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = torch.utils.data.TensorDataset(*regression_data())
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_top_k=2,
                                  save_last=True)  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=3, log_every_n_steps=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[checkpoints, callback],
    )  # fmt: skip
    trainer.fit(Regression(fail_at=fail_at), loader, loader)
    return checkpoints


def test_a_lightning_fit_is_a_run_with_metrics_stages_and_checkpoints(tmp_path: Path) -> None:
    pytest.importorskip("lightning", reason="lightning is not installed")
    from runwatch_sdk.lightning import RunwatchCallback

    events = tmp_path / "events.jsonl"
    checkpoints = lightning_fit(tmp_path, RunwatchCallback(FileTransport(events)))
    run = only_run(events)
    assert (run.name, run.status, run.step) == ("Regression", "completed", 12)
    assert run.config == {"lr": 0.05, "fail_at": None}
    assert {"loss", "learning_rate", "train_loss", "val_loss"} <= set(run.metrics)
    assert run.metrics["learning_rate"] == 0.05
    assert set(run.stages) == {"training", "validation"}
    recorded = {c.filepath for c in run.checkpoints.values()}
    assert {checkpoints.best_model_path, checkpoints.last_model_path} <= recorded
    assert best_path(run) == checkpoints.best_model_path
    best = next(c for c in run.checkpoints.values() if c.is_best)
    assert best.metrics == {"val_loss": pytest.approx(float(checkpoints.best_model_score))}
    account = run.goodput  # the callback marks its phases for the goodput account
    assert account.badput["evaluation"] > 0 and account.badput["data_loading"] > 0
    assert account.goodput > 0 and account.at_risk == 0 and account.lost_steps == 0


def test_a_lightning_fit_that_raises_is_a_failed_run_with_the_error(tmp_path: Path) -> None:
    pytest.importorskip("lightning", reason="lightning is not installed")
    from runwatch_sdk.lightning import RunwatchCallback

    events = tmp_path / "events.jsonl"
    with pytest.raises(RuntimeError, match="loss exploded"):
        lightning_fit(tmp_path, RunwatchCallback(FileTransport(events), run_name="doomed"),
                      fail_at=5)  # fmt: skip
    run = only_run(events)
    assert (run.name, run.status) == ("doomed", "failed")
    assert run.errors == {("RuntimeError", False): 1}


# -- Hugging Face Transformers --


def hf_train(tmp_path: Path, callback: object) -> object:
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")

    class Regression(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            prediction = self.layer(x)
            loss = torch.nn.functional.mse_loss(prediction, labels)
            return {"loss": loss, "logits": prediction}

    x, y = regression_data()
    rows = [{"x": x[i], "labels": y[i]} for i in range(32)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), run_name="hf-regression", max_steps=8,
        per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=0.05,
        logging_steps=2, eval_strategy="steps", eval_steps=4, save_strategy="steps",
        save_steps=4, metric_for_best_model="loss", greater_is_better=False,
        load_best_model_at_end=True, report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(model=Regression(), args=args, train_dataset=rows,
                                   eval_dataset=rows, callbacks=[callback])  # fmt: skip
    trainer.train()
    return trainer


def test_a_hugging_face_training_is_a_run_with_logs_and_checkpoints(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="transformers is not installed")
    from runwatch_sdk.huggingface import RunwatchTrainerCallback

    events = tmp_path / "events.jsonl"
    trainer = hf_train(tmp_path, RunwatchTrainerCallback(FileTransport(events)))
    run = only_run(events)
    assert (run.name, run.status, run.step) == ("hf-regression", "completed", 8)
    assert run.config["learning_rate"] == 0.05 and run.config["max_steps"] == 8
    assert {"loss", "learning_rate", "grad_norm", "eval_loss"} <= set(run.metrics)
    recorded = {Path(c.filepath).name for c in run.checkpoints.values()}
    assert recorded == {"checkpoint-4", "checkpoint-8"}
    assert best_path(run) == trainer.state.best_model_checkpoint
    account = run.goodput  # the callback marks its phases for the goodput account
    assert account.badput["evaluation"] > 0 and account.badput["checkpoint_save"] > 0
    assert account.badput["data_loading"] > 0 and account.goodput > 0


def test_a_hugging_face_failure_is_reported_by_the_monitor_that_owns_the_run(
    tmp_path: Path,
) -> None:
    pytest.importorskip("transformers", reason="transformers is not installed")
    from runwatch_sdk.huggingface import RunwatchTrainerCallback

    class Boom(RunwatchTrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise MemoryError("out of memory at step 3")

    events = tmp_path / "events.jsonl"
    monitor = TrainingMonitor("owned", transport=FileTransport(events))
    with pytest.raises(MemoryError), monitor:
        hf_train(tmp_path, Boom(monitor=monitor))
    run = only_run(events)
    assert (run.name, run.status) == ("owned", "failed")
    assert run.errors == {("MemoryError", False): 1}
    assert run.metrics["loss"] > 0
