"""Train one run into its run directory.

The step does no host-device synchronisation: losses, hits, skipped updates and the first
non-finite step are accumulated in device tensors and read at checkpoints; the pooling trace is
buffered on the device (see ``recorder``).  A checkpoint is written at each epoch end and, with
``train.checkpoint_every_steps``, every N steps inside an epoch; it holds everything the rest of
the run depends on (model, optimiser, scheduler, RNG states, the position in the epoch and the
epoch's running sums), so a run killed at any moment resumes from its last checkpoint, with its
CSV files cut back to that step, and ends exactly as if it had never stopped.  A SIGINT or
SIGTERM (see ``signals``) checkpoints at the current step and stops the run as ``interrupted``.

Under torchrun (``distributed``) every rank runs this loop on its share of each batch, through
the DistributedDataParallel wrapper; rank 0 alone writes, the epoch's sums are added over the
ranks, and the ranks agree on a stop every ``record.every_steps`` steps.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import asdict
from typing import Any, Protocol

import pandas as pd
import torch

from pooling_lab import atomic, results
from pooling_lab.data import DataSplits
from pooling_lab.data.loader import BatchLoader
from pooling_lab.evaluate import EvalBatches, SplitPass, accuracy_of, evaluate_trained, run_flags
from pooling_lab.experiment import RunSpec
from pooling_lab.models import build_model
from pooling_lab.pooling.exponent import global_p
from pooling_lab.results import RunFiles
from pooling_lab.run import signals
from pooling_lab.run.signals import Interrupted
from pooling_lab.train.checkpoint import load_checkpoint, save_checkpoint
from pooling_lab.train.context import Compute, compile_backbone, compute_for
from pooling_lab.train.distributed import SINGLE, World, data_parallel
from pooling_lab.train.gradient_split import GradientSplit
from pooling_lab.train.nonfinite import Diverged, NonFiniteWatch, guarded_step
from pooling_lab.train.optim import (
    BASE_GROUP,
    POOL_GROUP,
    build_optimizer,
    build_scheduler,
    group_lr,
)
from pooling_lab.train.recorder import ParamRecorder
from pooling_lab.train.totals import EpochTotals


class ProgressSink(Protocol):
    def run_started(self, spec: RunSpec, total_steps: int, done_steps: int) -> None: ...
    def step(self) -> None: ...
    def epoch_done(self, row: dict[str, Any]) -> None: ...
    def run_finished(self, spec: RunSpec, status: dict[str, Any]) -> None: ...


class SilentProgress:
    def run_started(self, spec: RunSpec, total_steps: int, done_steps: int) -> None:
        pass

    def step(self) -> None:
        pass

    def epoch_done(self, row: dict[str, Any]) -> None:
        pass

    def run_finished(self, spec: RunSpec, status: dict[str, Any]) -> None:
        pass


class Trainer:
    def __init__(self, spec: RunSpec, files: RunFiles, data: DataSplits, progress: ProgressSink, world: World = SINGLE):
        self.spec = spec
        self.config = config = spec.config
        self.files = files
        self.progress = progress
        self.world = world
        self.compute: Compute = compute_for(config.train, world)
        device = self.compute.device
        torch.manual_seed(config.train.seed)
        self.generator = torch.Generator(device=device).manual_seed(config.train.seed)
        in_channels = data.train.images.shape[1]
        self.num_classes = data.num_classes
        self.model = build_model(config, in_channels, data.num_classes).to(device)
        self.classifies = self.model.head.classifies  # a pair-loss head has no classifier: accuracy is NaN
        channels_last = device.type == "cuda"
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = data_parallel(self.model, device, world, config.train.sync_batchnorm)
        sampler = config.train.batch_sampler
        self.train_batches = BatchLoader(
            data.train, config.train.batch_size, shuffle=True, drop_last=True, augment=config.data.augment,
            generator=self.generator, device=device, mean=data.mean, std=data.std, channels_last=channels_last,
            m_per_class=sampler.m_per_class if sampler else None, share=(world.rank, world.size),
        )
        self.eval_batches = EvalBatches.of(data, config.train.eval_batch_size, device, channels_last)
        self.steps_per_epoch = len(self.train_batches)
        self.total_steps = self.steps_per_epoch * config.train.epochs
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch, self.total_steps)
        self.recorder = ParamRecorder(self.model, device)
        self.split = GradientSplit(self.model, world) if config.record.gradient_split else None
        self.watch = NonFiniteWatch(self.model, device)
        self.skip_nonfinite = config.train.on_nonfinite == "skip_step"
        self.clamp = config.optim.pool_params.clamp
        self.step = 0
        self.epoch = 0
        self.batch = 0  # batches of the current epoch done
        self.epoch_rng = self.generator.get_state()  # the data generator as the epoch began
        self.totals = EpochTotals.zeros(device)
        self.skipped_steps = 0
        self.metrics = pd.DataFrame(columns=results.METRIC_COLUMNS)
        self.params = pd.DataFrame(columns=results.PARAM_COLUMNS)
        self.splits = pd.DataFrame(columns=results.GRAD_SPLIT_COLUMNS)
        self.elapsed = 0.0  # training time, kept across resumes in the checkpoint
        self.eval_time = 0.0  # the final evaluation's
        self.local_status: dict[str, Any] = {}  # what a rank other than 0 would have written
        self._clock = time.perf_counter()

    # --- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint.  Inside an epoch it keeps the data generator as the epoch began and
        the number of batches done: the resumed epoch draws the same permutation and replays the
        augmentation draws of the batches already done, so every later batch is the same."""
        return {
            "run_id": self.spec.run_id,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.epoch_rng if self.batch else self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "totals": asdict(self.totals.summed(self.world)),
            "skipped_steps": self.skipped_steps,
            "elapsed": self.elapsed,
        }

    def resume(self) -> bool:
        """Continue from checkpoint.pt if there is one; cut the CSVs back to its step."""
        state = load_checkpoint(self.files, self.spec.run_id)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch_rng = state["generator"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.epoch, self.batch = state["step"], state["epoch"], state["batch"]
        totals = EpochTotals(**{key: value.to(self.compute.device) for key, value in state["totals"].items()})
        self.totals = totals.for_rank(self.world)
        self.skipped_steps, self.elapsed = state["skipped_steps"], state["elapsed"]
        self.watch = NonFiniteWatch(self.model, self.compute.device)
        metrics = results.read_csv(self.files.metrics, results.METRIC_COLUMNS)
        params = results.read_csv(self.files.params, results.PARAM_COLUMNS)
        splits = results.read_csv(self.files.grad_split, results.GRAD_SPLIT_COLUMNS)
        self.metrics = metrics[metrics["step"] <= self.step].reset_index(drop=True)
        self.params = params[params["step"] <= self.step].reset_index(drop=True)
        self.splits = splits[splits["step"] <= self.step].reset_index(drop=True)
        return True

    # --- training --------------------------------------------------------------------------------

    def run(self, **context: Any) -> dict[str, Any]:
        """Train (or resume) to the end and evaluate; return the final status.  ``context`` goes
        into status.json as it is (the sweep's session)."""
        resumed = self.resume()
        if not resumed:
            self.recorder.capture(0, 0.0, with_grad=False)
        attempts = (results.read_status(self.files) or {}).get("attempts", 0) + 1
        if self.config.train.compile:
            context["compile_error"] = self._compile()
        self._status(
            status="running", run_id=self.spec.run_id, device=str(self.compute.device),
            world_size=self.world.size, sync_batchnorm=self.world.distributed and self.config.train.sync_batchnorm,
            host=platform.node(), pid=os.getpid(), attempts=attempts, started=results.now(),
            protocol=self.config.data.protocol,
            epoch=self.epoch, epochs=self.config.train.epochs, step=self.step, total_steps=self.total_steps,
            resumed_from_step=self.step if resumed else None, error=None, traceback=None, **context,
        )
        self.progress.run_started(self.spec, self.total_steps, self.step)
        try:
            while self.epoch < self.config.train.epochs:
                self._train_epoch()
            status = self.finish()
        except Diverged as error:
            self._save_records()
            status = self._status(
                status="diverged", error=str(error), diverged_step=error.step,
                last_finite=error.last_finite, **self._summary(),
            )
        except Interrupted as error:  # checkpointed where it was raised
            status = self._status(status="interrupted", error=str(error), **self._summary())
            self.progress.run_finished(self.spec, status)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: keep what was recorded, resume from the last checkpoint
            self._save_records()
            self._status(status="interrupted", error="interrupted by the user", **self._summary())
            raise
        except Exception as error:  # a failed run keeps what it recorded; the sweep goes on
            self._save_records()
            if self.world.is_main:
                atomic.write_text(self.files.traceback, traceback.format_exc())
            status = self._status(
                status="failed", error=f"{type(error).__name__}: {error}",
                traceback=self.files.traceback.name, **self._summary(),
            )
            if self.world.distributed:  # the other ranks cannot go on without this one
                raise
        self.progress.run_finished(self.spec, status)
        return status

    def _compile(self) -> str | None:
        """Compile the backbone on one batch in training mode; the reason when it failed."""
        images, _ = next(iter(self.eval_batches.test))
        self.model.train()
        with self.compute.autocast():
            return compile_backbone(self.model.backbone, images[: self.config.train.batch_size])

    def _train_epoch(self) -> None:
        if self.batch == 0:
            self.epoch_rng = self.generator.get_state()
            self.totals = EpochTotals.zeros(self.compute.device)
        self.model.train()
        self._clock = time.perf_counter()
        every = self.config.train.checkpoint_every_steps
        for index, (images, labels) in enumerate(self.train_batches):
            if index < self.batch:
                continue  # done before the checkpoint; drawn again to keep the random stream in step
            self._train_step(images, labels)
            self.batch += 1
            signum = self._stop_signal()
            if signum is not None:
                self._checkpoint()
                raise Interrupted(signum)
            if every and self.step % every == 0 and self.batch < self.steps_per_epoch:
                self._checkpoint()
        self.epoch, self.batch = self.epoch + 1, 0
        self._end_epoch()

    def _stop_signal(self) -> int | None:
        """The signal that asks to stop, if any.  Under torchrun the ranks agree on it every
        ``record.every_steps`` steps and at an epoch's last batch, so all stop at one step."""
        if not self.world.distributed:
            return signals.requested()
        if self.step % self.config.record.every_steps and self.batch < self.steps_per_epoch:
            return None
        return self.world.any_signal(signals.requested())

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        model = self.model
        with self.compute.autocast():
            logits, embeddings = self.forward(images, labels)
            loss = model.head.loss(logits, labels)
        after = self.step + 1
        recording = after % self.config.record.every_steps == 0 or after == self.total_steps
        if recording and self.split is not None:
            self.split.capture(after, after / self.steps_per_epoch, loss, logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = self.world.mean_(loss.detach())  # every rank skips, or diverges at, the same steps
        applied = None
        if self.skip_nonfinite:
            applied = guarded_step(self.optimizer, loss)
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.clamp is not None:
            for _, pool in model.pools():
                pool.clamp_exponents_(*self.clamp)
        self.step += 1
        with torch.no_grad():
            if self.classifies:
                hits = (model.head(embeddings.detach()).argmax(dim=1) == labels).sum()
            else:
                hits = torch.zeros((), dtype=torch.long, device=labels.device)
            self.totals.add(loss, hits, labels.numel(), applied)
            self.watch.observe(self.step, None if self.skip_nonfinite else loss)
        if recording:
            self.recorder.capture(self.step, self.step / self.steps_per_epoch)
        self.progress.step()

    def _tick(self) -> None:
        """Add the time since the last tick to ``elapsed``."""
        now = time.perf_counter()
        self.elapsed, self._clock = self.elapsed + now - self._clock, now

    def _end_epoch(self) -> None:
        self._tick()
        train_loss, train_accuracy, skipped = self.totals.read(self.world)
        if not self.classifies:
            train_accuracy = float("nan")
        self.skipped_steps += skipped
        p = global_p(self.model.pool)
        try:
            self.watch.check()
            if skipped == self.steps_per_epoch:
                first = self.step - self.steps_per_epoch + 1
                raise Diverged(f"every update of epoch {self.epoch} was non-finite and skipped (from step {first})",
                               first, self.watch.last_finite_values())
        except Diverged:
            self._append_metrics(train_loss, train_accuracy, float("nan"), float("nan"), p)
            raise
        val = self._accuracy(self.eval_batches.val)
        test = self._accuracy(self.eval_batches.test)
        row = self._append_metrics(train_loss, train_accuracy, val, test, p)
        self._checkpoint()
        self.progress.epoch_done(row)

    def _checkpoint(self) -> None:
        """Bring the run directory up to the current step: trace and metrics first, then the
        checkpoint, then the status (a kill between two writes loses nothing: on resume the
        CSVs are cut back to the checkpoint's step)."""
        self.watch.check()
        self._tick()
        state = self.state()  # on every rank: it sums the epoch's totals over the ranks
        self._save_records()
        if self.world.is_main:
            save_checkpoint(self.files, state)
        self._status(status="running", epoch=self.epoch, step=self.step)

    def _accuracy(self, batches: BatchLoader | None) -> float:
        if batches is None or not self.classifies:
            return float("nan")
        return accuracy_of(SplitPass(self.model, batches, self.compute.autocast()).outputs())

    def finish(self) -> dict[str, Any]:
        """The final evaluation (``evaluate_trained``): writes final_params.csv and probe.csv and
        marks the run done, with ``flags`` naming what looks wrong in its numbers."""
        start = time.perf_counter()
        if self.world.is_main:
            self._write_final_params()
        final = evaluate_trained(self.model, self.eval_batches, self.config.eval, self.config.eval.probe_p,
                                 self.compute.autocast())
        if final.probe is not None and self.world.is_main:
            results.write_csv(self.files.probe, final.probe)
        self.eval_time = time.perf_counter() - start  # the metrics were read to the host: no sync needed
        summary = self._summary() | final.metrics
        return self._status(status="done", finished=results.now(), flags=run_flags(summary, self.num_classes), **summary)

    def _write_final_params(self) -> None:
        """Every element of every traced pooling parameter at the end (per-channel p histograms)."""
        rows = [
            {"module": module, "param": name, "index": index, "value": value}
            for module, pool in self.model.pools()
            for name, (tensor, _) in pool.traced().items()
            for index, value in enumerate(tensor.float().flatten().tolist())
        ]
        results.write_csv(self.files.final_params, pd.DataFrame(rows, columns=results.FINAL_PARAM_COLUMNS))

    def _append_metrics(self, train_loss: float, train_accuracy: float, val: float, test: float, p: float) -> dict:
        row = {
            "epoch": self.epoch, "step": self.step, "train_loss": train_loss, "train_accuracy": train_accuracy,
            "val_accuracy": val, "test_accuracy": test, "lr": group_lr(self.optimizer, BASE_GROUP),
            "lr_pool": group_lr(self.optimizer, POOL_GROUP), "p": p, "time_s": round(self.elapsed, 3),
        }
        frame = pd.DataFrame([row], columns=results.METRIC_COLUMNS)
        self.metrics = _appended(self.metrics, frame)
        return row

    def _save_records(self) -> None:
        self.params = _appended(self.params, self.recorder.drain())
        if self.split is not None:
            self.splits = _appended(self.splits, self.split.drain())
        if self.world.is_main:
            results.write_csv(self.files.metrics, self.metrics)
            results.write_csv(self.files.params, self.params)
            if self.split is not None:
                results.write_csv(self.files.grad_split, self.splits)

    def _status(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into status.json and return it; ranks other than 0 keep it in memory."""
        if self.world.is_main:
            return results.update_status(self.files, **fields)
        self.local_status.update(fields)
        return dict(self.local_status)

    def _summary(self) -> dict[str, Any]:
        last = self.metrics.iloc[-1] if not self.metrics.empty else {}
        return {
            "epoch": self.epoch, "step": self.step, "train_time_s": round(self.elapsed, 3),
            "eval_time_s": round(self.eval_time, 3), "wall_time_s": round(self.elapsed + self.eval_time, 3),
            "p_final": global_p(self.model.pool), "skipped_steps": self.skipped_steps,
            "test_accuracy": float(last.get("test_accuracy", float("nan"))) if len(last) else float("nan"),
            "val_accuracy": float(last.get("val_accuracy", float("nan"))) if len(last) else float("nan"),
        }


def _appended(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``rows`` below it (concatenating an empty frame would change the dtypes)."""
    if rows.empty:
        return frame
    return rows if frame.empty else pd.concat([frame, rows], ignore_index=True)
