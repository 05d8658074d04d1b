"""A PyTorch Lightning callback that reports a ``Trainer.fit`` to runwatch::

    from runwatch_sdk import FileTransport
    from runwatch_sdk.lightning import RunwatchCallback

    trainer = Trainer(callbacks=[RunwatchCallback(FileTransport("/tmp/runwatch/lightning.jsonl"))])

The run starts with the fit (named after the module's class unless ``run_name`` is
given, its ``hparams`` as config), the stage follows training and validation, the
loss, the learning rate and everything logged with ``self.log`` go out every
``log_every_n_steps``, each ``ModelCheckpoint`` file is a checkpoint (★ on its best),
and the run ends ``completed``, ``failed`` with the exception, or ``interrupted``.
For the goodput account, the time between a batch's end and the next batch's start is
``data_loading`` and validation is ``evaluation``.
Needs ``lightning`` (or ``pytorch_lightning``): ``pip install 'runwatch[lightning]'``.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning import LightningModule, Trainer
    from pytorch_lightning.callbacks import Callback

from runwatch_sdk.reporter import ReportingCallback


class RunwatchCallback(ReportingCallback, Callback):
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.reporter.start(
            type(pl_module).__name__, dict(pl_module.hparams), trainer.is_global_zero
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._checkpoints(trainer)
        self.reporter.stage("training")

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.reporter.phase(None)  # the batch is here: data loading ends

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        self._log_step(trainer, outputs)
        self.reporter.phase("data_loading")  # until the next batch arrives

    def _log_step(self, trainer: Trainer, outputs: Any) -> None:
        if trainer.global_step % max(1, trainer.log_every_n_steps) != 0:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        values: dict[str, Any] = {"loss": loss} if loss is not None else {}
        if trainer.optimizers:
            values["learning_rate"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.reporter.metrics({**values, **trainer.callback_metrics}, trainer.global_step)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._checkpoints(trainer)
            self.reporter.stage("validation")
            self.reporter.phase("evaluation")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.reporter.metrics(trainer.callback_metrics, trainer.global_step)
            self.reporter.phase(None)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self.reporter.finish(exception)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._checkpoints(trainer)
        self.reporter.finish()

    def _checkpoints(self, trainer: Trainer) -> None:
        """Files the ModelCheckpoint callbacks have written since the last look (they run
        after user callbacks, so a checkpoint is seen at the next hook)."""
        for callback in trainer.checkpoint_callbacks:
            scores = getattr(callback, "best_k_models", {})
            paths = [*scores, getattr(callback, "last_model_path", "")]
            metric = getattr(callback, "monitor", None) or "score"
            for path in paths:
                score = scores.get(path)
                metrics = {metric: score} if score is not None else {}
                self.reporter.checkpoint(path, metrics, trainer.global_step)
            self.reporter.best(getattr(callback, "best_model_path", None))
