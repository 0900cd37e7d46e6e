"""Train one run into its run directory.

The step does no host-device synchronisation: losses, hits and the first non-finite step are
accumulated in device tensors and read once per epoch; the pooling trace is buffered on the
device (see ``recorder``).  At each epoch end the run directory is brought up to date
atomically (metrics, trace, checkpoint, status), so a killed run loses at most one epoch and
resumes from the last checkpoint with its CSV files cut back to that point.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any, Protocol

import pandas as pd
import torch

from pooling_lab import atomic, results
from pooling_lab.config import RunSpec
from pooling_lab.data import DataSplits
from pooling_lab.data.loader import BatchLoader
from pooling_lab.evaluate import SplitPass, accuracy_of, best_p, probe, split_metrics
from pooling_lab.models import Classifier, build_model
from pooling_lab.results import RunFiles
from pooling_lab.train.context import Compute, compute_for
from pooling_lab.train.optim import (
    BASE_GROUP,
    POOL_GROUP,
    build_optimizer,
    build_scheduler,
    group_lr,
)
from pooling_lab.train.recorder import ParamRecorder


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


class Diverged(Exception):
    """A loss or pooling parameter became non-finite."""


def current_p(model: Classifier) -> float:
    """The global pool's exponent p (its mean when per-channel), NaN if it has none."""
    traced = model.pool.traced() if hasattr(model.pool, "traced") else {}
    if "p" in traced:
        return traced["p"][0].float().mean().item()
    fixed = getattr(model.pool, "p", None)
    return fixed.float().mean().item() if isinstance(fixed, torch.Tensor) else float("nan")


class Trainer:
    def __init__(self, spec: RunSpec, files: RunFiles, data: DataSplits, progress: ProgressSink):
        self.spec = spec
        self.config = config = spec.config
        self.files = files
        self.progress = progress
        self.compute: Compute = compute_for(config.train)
        device = self.compute.device
        torch.manual_seed(config.train.seed)
        self.generator = torch.Generator(device=device).manual_seed(config.train.seed)
        in_channels = data.train.images.shape[1]
        self.model = build_model(config, in_channels, data.num_classes).to(device)
        channels_last = device.type == "cuda"
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        common = {"device": device, "mean": data.mean, "std": data.std, "channels_last": channels_last}
        self.train_batches = BatchLoader(
            data.train, config.train.batch_size, shuffle=True, drop_last=True,
            augment=config.data.augment, generator=self.generator, **common,
        )
        evaluation = {"shuffle": False, "drop_last": False, "augment": None, "generator": None, **common}
        self.val_batches = BatchLoader(data.val, config.train.eval_batch_size, **evaluation) if data.val else None
        self.test_batches = BatchLoader(data.test, config.train.eval_batch_size, **evaluation)
        self.steps_per_epoch = len(self.train_batches)
        self.total_steps = self.steps_per_epoch * config.train.epochs
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch, self.total_steps)
        self.recorder = ParamRecorder(self.model, device)
        self.clamp = config.optim.pool_params.clamp
        self.step = 0
        self.epoch = 0
        self.metrics = pd.DataFrame(columns=results.METRIC_COLUMNS)
        self.params = pd.DataFrame(columns=results.PARAM_COLUMNS)
        self.elapsed = 0.0

    # --- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "run_id": self.spec.run_id,
        }

    def resume(self) -> bool:
        """Continue from checkpoint.pt if there is one; cut the CSVs back to its step."""
        if not self.files.checkpoint.exists():
            return False
        state = torch.load(self.files.checkpoint, map_location=self.compute.device, weights_only=False)
        if state.get("run_id") != self.spec.run_id:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.epoch, self.elapsed = state["step"], state["epoch"], state["elapsed"]
        metrics = results.read_csv(self.files.metrics, results.METRIC_COLUMNS)
        params = results.read_csv(self.files.params, results.PARAM_COLUMNS)
        self.metrics = metrics[metrics["step"] <= self.step].reset_index(drop=True)
        self.params = params[params["step"] <= self.step].reset_index(drop=True)
        return True

    # --- training --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        resumed = self.resume()
        if not resumed:
            self.recorder.capture(0, 0.0, with_grad=False)
        results.update_status(
            self.files, status="running", run_id=self.spec.run_id, device=str(self.compute.device),
            started=results.now(), resumed_from_step=self.step if resumed else None, error=None,
        )
        self.progress.run_started(self.spec, self.total_steps, self.step)
        try:
            while self.epoch < self.config.train.epochs:
                self._train_epoch()
            status = self.evaluate_final(self.config.eval.probe_p)
        except Diverged as error:
            self._save_records()
            status = results.update_status(self.files, status="diverged", error=str(error), **self._summary())
        except KeyboardInterrupt:
            self._save_records()
            results.update_status(self.files, status="interrupted", error="interrupted by the user", **self._summary())
            raise
        except Exception as error:  # a failed run keeps what it recorded; the sweep goes on
            self._save_records()
            atomic.write_text(self.files.traceback, traceback.format_exc())
            status = results.update_status(
                self.files, status="failed", error=f"{type(error).__name__}: {error}",
                traceback=self.files.traceback.name, **self._summary(),
            )
        self.progress.run_finished(self.spec, status)
        return status

    def _train_epoch(self) -> None:
        model, device = self.model, self.compute.device
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device, dtype=torch.long)
        first_nonfinite = torch.full((), -1, device=device, dtype=torch.long)
        seen = 0
        every = self.config.record.every_steps
        for images, labels in self.train_batches:
            with self.compute.autocast():
                embeddings = model.embed(images)
                logits = model.head(embeddings, labels)
                loss = model.head.loss(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.clamp is not None:
                for _, pool in model.pools():
                    pool.clamp_exponents_(*self.clamp)
            self.step += 1
            with torch.no_grad():
                loss = loss.detach()
                loss_sum += loss * labels.numel()
                hits += (model.head(embeddings.detach()).argmax(dim=1) == labels).sum()
                bad = ~torch.isfinite(loss) & (first_nonfinite < 0)
                first_nonfinite = torch.where(bad, self.step, first_nonfinite)
            seen += labels.numel()
            if self.step % every == 0 or self.step == self.total_steps:
                self.recorder.capture(self.step, self.step / self.steps_per_epoch)
            self.progress.step()
        self.epoch += 1
        self.elapsed += time.perf_counter() - started
        self._end_epoch(loss_sum.item() / max(seen, 1), hits.item() / max(seen, 1), int(first_nonfinite.item()))

    def _end_epoch(self, train_loss: float, train_accuracy: float, first_nonfinite: int) -> None:
        p = current_p(self.model)
        if first_nonfinite >= 0 or not math.isfinite(p):
            self._append_metrics(train_loss, train_accuracy, float("nan"), float("nan"), p)
            where = f"step {first_nonfinite}" if first_nonfinite >= 0 else f"epoch {self.epoch}"
            raise Diverged(f"non-finite {'loss' if first_nonfinite >= 0 else 'pooling parameter'} at {where}")
        val = self._accuracy(self.val_batches)
        test = self._accuracy(self.test_batches)
        row = self._append_metrics(train_loss, train_accuracy, val, test, p)
        self._save_records()
        atomic.save_torch(self.files.checkpoint, self.state())
        results.update_status(self.files, status="running", epoch=self.epoch, step=self.step)
        self.progress.epoch_done(row)

    def _accuracy(self, batches: BatchLoader | None) -> float:
        if batches is None:
            return float("nan")
        return accuracy_of(SplitPass(self.model, batches, self.compute.autocast()).outputs())

    def evaluate_final(self, probe_p: list[float]) -> dict[str, Any]:
        """Final evaluation: the metrics on val and test, and the test-time p probe over
        ``probe_p`` (p_opt chosen on val, test metrics at p_opt); marks the run done."""
        self._write_final_params()
        evaluation = self.config.eval
        probing = bool(probe_p)
        final: dict[str, Any] = {}
        test = SplitPass(self.model, self.test_batches, self.compute.autocast(), keep_maps=probing)
        final |= {f"test_{k}": v for k, v in split_metrics(test.outputs(), evaluation.metrics).items()}
        if self.val_batches is not None:
            val = SplitPass(self.model, self.val_batches, self.compute.autocast(), keep_maps=probing)
            final |= {f"val_{k}": v for k, v in split_metrics(val.outputs(), evaluation.metrics).items()}
            if probing:
                table = probe(val, probe_p, evaluation.metrics)
                results.write_csv(self.files.probe, table)
                final["p_opt"] = p_opt = best_p(table)
                at_opt = probe(test, [p_opt], evaluation.metrics).iloc[0]
                final |= {f"test_{k}_at_p_opt": float(at_opt[k]) for k in evaluation.metrics}
        return results.update_status(self.files, status="done", finished=results.now(), **(self._summary() | final))

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
        self.metrics = frame if self.metrics.empty else pd.concat([self.metrics, frame], ignore_index=True)
        return row

    def _save_records(self) -> None:
        drained = self.recorder.drain()
        if not drained.empty:
            self.params = drained if self.params.empty else pd.concat([self.params, drained], ignore_index=True)
        results.write_csv(self.files.metrics, self.metrics)
        results.write_csv(self.files.params, self.params)

    def _summary(self) -> dict[str, Any]:
        last = self.metrics.iloc[-1] if not self.metrics.empty else {}
        return {
            "epoch": self.epoch, "step": self.step, "wall_time_s": round(self.elapsed, 3),
            "p_final": current_p(self.model),
            "test_accuracy": float(last.get("test_accuracy", float("nan"))) if len(last) else float("nan"),
            "val_accuracy": float(last.get("val_accuracy", float("nan"))) if len(last) else float("nan"),
        }
