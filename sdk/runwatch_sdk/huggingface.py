"""A Hugging Face ``TrainerCallback`` that reports a ``Trainer.train`` to runwatch::

    from runwatch_sdk import FileTransport
    from runwatch_sdk.huggingface import RunwatchTrainerCallback

    trainer = Trainer(..., callbacks=[RunwatchTrainerCallback(FileTransport(path))])

The run starts with training (named after ``args.run_name`` unless ``run_name`` is
given, the training arguments as config), every log (loss, learning rate, grad norm,
eval metrics) is a step metric, every saved ``checkpoint-N`` directory a checkpoint
(★ on ``state.best_model_checkpoint``), and the run ends ``completed``. For the goodput
account, the time from a step's end to the next step's start is ``data_loading``, but
what ends in an evaluation is ``evaluation`` and what ends in a save
``checkpoint_save``. Hugging Face calls no callback when training raises: to report a
failure, create the monitor and pass it in, ``with TrainingMonitor(...) as monitor: ...callbacks=[
RunwatchTrainerCallback(monitor=monitor)]``, so the ``with`` block ends the run.
Needs ``transformers``: ``pip install 'runwatch[transformers]'``.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from runwatch_sdk.reporter import ReportingCallback


class RunwatchTrainerCallback(ReportingCallback, TrainerCallback):
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        name = args.run_name or os.path.basename(os.path.normpath(args.output_dir or "run"))
        self.reporter.start(name, args.to_sanitized_dict(), state.is_world_process_zero)
        self.reporter.stage("training")

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.phase(None)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.phase("data_loading")

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.phase("data_loading", closing_as="evaluation")

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any] | None = None, **kw: Any,
    ) -> None:  # fmt: skip
        if logs and any(str(key).startswith("eval_") for key in logs):
            self.reporter.phase("data_loading", closing_as="evaluation")  # evaluate() logs
        if logs:
            self.reporter.metrics(logs, state.global_step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        path = os.path.join(args.output_dir or "", f"checkpoint-{state.global_step}")
        metrics = {}
        if args.metric_for_best_model and state.log_history:
            key = args.metric_for_best_model
            key = key if key.startswith("eval_") else f"eval_{key}"
            latest = next((log[key] for log in reversed(state.log_history) if key in log), None)
            metrics = {key: latest} if latest is not None else {}
        self.reporter.phase("data_loading", closing_as="checkpoint_save")
        self.reporter.checkpoint(path, metrics, state.global_step)
        self.reporter.best(state.best_model_checkpoint)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.reporter.finish()
