"""The ``train-embeddings`` stage: SimCLR on the user's own images.

Pipeline: scan → seeded subset of ``train.max_images`` → decode once into a uint8 memmap
(``train.cache``) → seeded train/val split → per step, a batch read from the memmap (prefetched by
a thread) → two views by batched per-sample augmentation on the training device → backbone (from the
architecture registry) + projection head → NT-Xent → optimiser step with warm-up + cosine schedule.

Every epoch: validation (NT-Xent on fixed views of the val split, and precision@10 of cosine
neighbours when images sit in class folders), one log line to the caller and to
``output.dir/train_log.jsonl``, the best backbone so far to ``output.dir/embedding_model.pt`` and
a full checkpoint (model, head, optimiser, scheduler, position, RNG states) written atomically to
``output.dir/checkpoints/checkpoint.pt`` (also every ``train.checkpoint_every_steps`` steps).
``resume=True`` continues exactly where the checkpoint left off, mid-epoch included. The first
Ctrl-C is acknowledged at once, finishes the current step, checkpoints and returns; a second one
stops at once (the last checkpoint is kept; a save in progress completes first). Temporaries a
killed run left beside the checkpoint, the model file and in the cache are removed at the start.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import torch

from imagerec.atomic import remove_stale_temps
from imagerec.config import Config, TrainConfig
from imagerec.embed.base import ModelSpec, architecture
from imagerec.embed.device import select_device, set_torch_threads
from imagerec.embed.files import pretrained_backbone, save_model
from imagerec.errors import Interrupted, TrainError
from imagerec.procs import interrupt_acknowledged, say_now
from imagerec.progress import ProgressCallback, report
from imagerec.train.augment import AugmentSettings
from imagerec.train.checkpoint import Resumable, RunState, load_checkpoint, save_checkpoint
from imagerec.train.data import TrainData, epoch_batches, prefetch_batches, prepare_data
from imagerec.train.optim import (WarmupCosine, balanced_batches, make_optimizer, make_scheduler, peak_lr, reschedule,
                                  warmup_steps, weight_decay)
from imagerec.train.report import EpochLog, TrainSummary
from imagerec.train.settings import TrainSettings
from imagerec.train.simclr import build_simclr
from imagerec.train.validate import ValScores, validate

__all__ = ["EpochLog", "TrainSummary", "Trainer", "train_embeddings"]

SYNC_EVERY = 20  # steps between loss read-backs (each one waits for the GPU)
ESTIMATE_AFTER = 3  # steps timed before the run's wall time is projected
SMALL_SET, SHORT_RUN = 500, 100  # below these (training images, total steps) a run is warned about
Say = Callable[[str], None]


def train_embeddings(
    config: Config,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    log: Say | None = None,
    on_epoch: Callable[[EpochLog], bool | None] | None = None,
) -> TrainSummary:
    """Train the embedding model as ``config.train`` says; returns a summary.

    ``progress`` receives events of stage "decode" (building the cache) and "epoch n/N" (images of
    the epoch done); ``log`` receives one line per epoch (and notes); ``on_epoch`` is called after
    each epoch's checkpoint and may return True to stop there (like Ctrl-C).
    """
    started = time.perf_counter()
    settings = TrainSettings.from_config(config)
    say = log or (lambda line: None)
    device = select_device(settings.device)
    set_torch_threads(settings.threads, device)
    ckpt_path = settings.layout.checkpoint
    for target in (ckpt_path, settings.layout.model):
        remove_stale_temps(target)
    if resume and not ckpt_path.exists():
        raise TrainError(f"no checkpoint at {ckpt_path}; start without --resume")
    data = prepare_data(settings, progress, say)
    trainer = Trainer(settings, data, device, say)
    if resume:
        trainer.resume()
    else:
        if ckpt_path.exists():
            say(f"note: starting afresh; {ckpt_path} will be replaced (use --resume to continue it)")
        trainer.baseline()
    try:
        with StopOnSigint() as stop:
            interrupted = trainer.run(stop, progress, on_epoch)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped at once; the last checkpoint in {ckpt_path.parent} is kept "
                          "(continue with --resume)") from None
    return trainer.summary(wall_s=time.perf_counter() - started, interrupted=interrupted)


class Trainer:
    """One training run: the model, optimiser and schedule, the data, and where training stands."""

    def __init__(self, settings: TrainSettings, data: TrainData, device: torch.device, say: Say):
        tc = self.tc = settings.train
        self.settings, self.epochs = settings, settings.epochs
        self.layout, self.data, self.device, self.say = settings.layout, data, device, say
        self.ckpt_path = settings.layout.checkpoint
        self.batch, self.steps_per_epoch = balanced_batches(len(data.train_rows), tc.batch_size)
        if self.batch != tc.batch_size:
            say(f"note: {len(data.train_rows)} training images; batch size {self.batch} instead of {tc.batch_size} "
                f"so that each epoch uses all but {len(data.train_rows) - self.batch * self.steps_per_epoch} of them")
        self.spec = training_spec(settings)
        channels_last = tc.channels_last if tc.channels_last is not None else device.type == "cuda"
        torch.manual_seed(tc.seed)
        self.model = build_simclr(self.spec, augment_settings(tc), tc.temperature, device, channels_last)
        if settings.fine_tuning:
            self.model.backbone.load_state_dict(pretrained_backbone(self.spec).state_dict())
        fixed, stage_count = fixed_stages(settings, self.model.backbone)
        self.model.keep_fixed(fixed)
        if fixed:
            say(f"training the last {stage_count - len(fixed)} of {stage_count} backbone stages "
                f"(the first {len(fixed)} keep their weights; train.trainable_stages)")
        self.optimizer = make_optimizer(tc.optimizer, self.model.trainable(),
                                        peak_lr(tc.optimizer, tc.lr, self.batch, settings.fine_tuning),
                                        weight_decay(tc.optimizer, tc.weight_decay))
        total = self.epochs * self.steps_per_epoch
        self.schedule = WarmupCosine(warmup_steps(tc.warmup_epochs, self.steps_per_epoch, total, say), total)
        self.scheduler = make_scheduler(self.optimizer, self.schedule)
        self.augment_gen = torch.Generator(device=device).manual_seed(tc.seed)
        self.compat = {"cache_key": data.cache.key, "image_size": self.spec.image_size, "stem": tc.stem, "batch_size": self.batch,
                       "seed": tc.seed, "val_fraction": tc.val_fraction, "optimizer": tc.optimizer,
                       "arch": self.spec.arch, "init": settings.model.init, "fixed_stages": len(fixed)}
        self.state = RunState(run=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.start_epoch = 0
        if len(data.train_rows) < SMALL_SET or total < SHORT_RUN:
            say(f"warning: {len(data.train_rows)} training images and {total} steps are very little to learn from; "
                f"expect little gain below ~{SMALL_SET} images and ~{SHORT_RUN} steps")

    def baseline(self) -> None:
        """Fine-tuning: score the pretrained start on validation, so only an epoch that beats it is kept."""
        if not self.settings.fine_tuning or self.data.labels is None:
            return
        scores = validate(self.model, self.data.cache.images, self.data.val_rows, self.data.labels, self.batch, self.tc.seed)
        if scores.p_at_10 is not None:
            self.state.best = {"metric": "val_p@10", "value": scores.p_at_10, "epoch": 0}
            self.say(f"pretrained start: val P@10 {scores.p_at_10:.4f}; an epoch is kept only if it beats that")

    @property
    def resumable(self) -> Resumable:
        """What the checkpoint saves and restores."""
        return Resumable(self.model.backbone, self.model.head, self.optimizer, self.scheduler, self.augment_gen)

    def resume(self) -> None:
        """Continue from the checkpoint (TrainError if it does not fit this run's settings)."""
        self.state = load_checkpoint(self.ckpt_path, self.compat, self.resumable)
        reschedule(self.scheduler, self.schedule)  # the epoch count may have changed; the step count carries on
        self.start_epoch = self.state.epoch
        self.say(f"resuming at epoch {self.state.epoch + 1}, step {self.state.step_in_epoch}/{self.steps_per_epoch} of it")

    def run(self, stop: "StopOnSigint", progress: ProgressCallback | None, on_epoch) -> bool:
        """Train until ``epochs``; returns True when stopped early (Ctrl-C or ``on_epoch``)."""
        st = self.state
        while st.epoch < self.epochs:
            if not self.train_epoch(stop, progress):
                self.checkpoint()
                self.say(f"stopped at epoch {st.epoch + 1}, step {st.step_in_epoch}/{self.steps_per_epoch}; "
                         f"checkpoint saved to {self.ckpt_path} (continue with --resume)")
                return True
            entry = self.end_epoch()
            self.say(entry.line())
            if (on_epoch and on_epoch(entry)) or stop.requested:
                self.say(f"stopped after epoch {entry.epoch}; checkpoint saved to {self.ckpt_path} (continue with --resume)")
                return True
        return False

    def train_epoch(self, stop: "StopOnSigint", progress: ProgressCallback | None) -> bool:
        """The rest of the current epoch; False when Ctrl-C stopped it after a step."""
        st, b = self.state, self.batch
        stage, total = f"epoch {st.epoch + 1}/{self.epochs}", self.steps_per_epoch * b
        steps = epoch_batches(self.data.train_rows, b, self.tc.seed, st.epoch, st.step_in_epoch)
        self.model.train()
        report(progress, stage, st.step_in_epoch * b, total)
        every = self.tc.checkpoint_every_steps
        pending: list[torch.Tensor] = []  # losses not yet read back: reading forces a device sync
        t0 = time.perf_counter()
        for images in prefetch_batches(self.data.cache.images, steps, pin=self.device.type == "cuda"):
            pending.append(self.step(images))
            st.loss_count += 1
            st.step_in_epoch += 1
            st.global_step += 1
            stopping = stop.requested
            saving = bool(every) and st.global_step % every == 0
            if len(pending) >= SYNC_EVERY or stopping or saving or st.step_in_epoch == self.steps_per_epoch:
                st.loss_sum += float(torch.stack(pending).sum())
                pending.clear()
            now = time.perf_counter()
            st.train_s += now - t0
            t0 = now
            report(progress, stage, st.step_in_epoch * b, total, step=st.global_step)
            if st.step_in_epoch == ESTIMATE_AFTER and st.epoch == self.start_epoch:
                self.say_estimate()
            if stopping:
                return False
            if saving:
                self.checkpoint()
                t0 = time.perf_counter()
        return True

    def say_estimate(self) -> None:
        """After the first steps: the run's projected wall time (steps left at the pace so far, plus validation)."""
        st = self.state
        per_step = st.train_s / max(st.step_in_epoch, 1)
        left = self.epochs * self.steps_per_epoch - st.global_step
        val_share = len(self.data.val_rows) / max(len(self.data.train_rows), 1) / 2  # val: one pass, no backward
        minutes = left * per_step * (1 + val_share) / 60
        self.say(f"estimate: ~{minutes:.0f} min for the remaining {left} steps ({per_step:.2f} s/step), validation included")

    def step(self, images: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a uint8 NHWC batch; returns the loss (not read back)."""
        m = self.model
        views = m.two_views(m.to_unit(images), self.augment_gen)
        with m.autocast():
            z = m.head(m.backbone(views))
        loss = m.pair_loss(z)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def end_epoch(self) -> EpochLog:
        """Validate, log, keep the best model, reset the epoch counters, checkpoint."""
        st = self.state
        v0 = time.perf_counter()
        scores = validate(self.model, self.data.cache.images, self.data.val_rows, self.data.labels, self.batch, self.tc.seed)
        val_s = time.perf_counter() - v0
        metric, value, better = self._best_candidate(scores)
        st.epoch += 1
        entry = EpochLog(run=st.run, epoch=st.epoch, epochs=self.epochs, step=st.global_step,
                         train_loss=st.loss_sum / max(st.loss_count, 1), val_loss=scores.loss,
                         val_p_at_10=scores.p_at_10, val_map=scores.mean_ap, lr=self.optimizer.param_groups[0]["lr"],
                         images_per_s=st.loss_count * self.batch / max(st.train_s, 1e-9), train_s=st.train_s,
                         val_s=val_s, best=better)
        if better:
            st.best = {"metric": metric, "value": value, "epoch": st.epoch}
            st.best_model_id = self._save_model(entry)
        st.history.append(asdict(entry))
        st.step_in_epoch, st.loss_sum, st.loss_count, st.train_s = 0, 0.0, 0, 0.0
        entry.append_to(self.layout.train_log)
        self.checkpoint()
        return entry

    def _best_candidate(self, scores: ValScores) -> tuple[str, float | None, bool]:
        previous = self.state.best["value"]
        if scores.p_at_10 is not None:
            return "val_p@10", scores.p_at_10, previous is None or scores.p_at_10 > previous
        if scores.loss is not None:
            return "val_loss", scores.loss, previous is None or scores.loss < previous
        return "last", None, True

    def _save_model(self, entry: EpochLog) -> str:
        st, data = self.state, self.data
        info = {
            "trainer": "imagerec.train (SimCLR)", "init": self.settings.model.init, "epochs": entry.epoch,
            "image_size": self.spec.image_size, "fixed_stages": len(self.model.fixed),
            "stem": self.spec.stem, "dataset_size": len(data.train_rows) + len(data.val_rows),
            "train_images": len(data.train_rows), "val_images": len(data.val_rows),
            "best_metric": st.best["metric"], "best_value": st.best["value"],
            "wall_s": sum(h["train_s"] + h["val_s"] for h in st.history) + entry.train_s + entry.val_s,
            "batch_size": self.batch, "optimizer": self.tc.optimizer, "temperature": self.tc.temperature,
            "seed": self.tc.seed,
        }
        return save_model(self.layout.model, self.model.backbone, self.spec, info)

    def checkpoint(self) -> None:
        """Write the checkpoint (atomically) for the current position."""
        save_checkpoint(self.ckpt_path, self.compat, self.state, self.resumable)

    def summary(self, *, wall_s: float, interrupted: bool) -> TrainSummary:
        """The ``TrainSummary`` of this run so far."""
        st, layout, best = self.state, self.layout, self.state.best
        return TrainSummary(
            model_path=layout.model, model_id=st.best_model_id, checkpoint_path=self.ckpt_path,
            log_path=layout.train_log, start_epoch=self.start_epoch, epochs_done=st.epoch, epochs=self.epochs,
            train_images=len(self.data.train_rows), val_images=len(self.data.val_rows), skipped=self.data.cache.skipped,
            best_metric=best["metric"], best_value=best["value"], best_epoch=best["epoch"],
            cache_built=self.data.cache.built, wall_s=wall_s, interrupted=interrupted,
            history=[EpochLog(**h) for h in st.history],
        )


def training_spec(settings: TrainSettings) -> ModelSpec:
    """The spec of the model this run trains (architecture, stem, input size, normalisation)."""
    arch = architecture(settings.model.arch)
    if settings.train.stem not in arch.stems:
        raise TrainError(f"train.stem: {settings.train.stem!r} is not a stem of {arch.name} (it has {list(arch.stems)}); "
                         f"fix it in {settings.where}")
    return arch.spec(settings.image_size, settings.train.stem)


def fixed_stages(settings: TrainSettings, backbone: torch.nn.Module) -> tuple[list[torch.nn.Module], int]:
    """The backbone's leading stages this run keeps fixed (all but ``trainable_stages``), and its stage count."""
    trainable = settings.trainable_stages
    split = architecture(settings.model.arch).stages
    if trainable is None or split is None:  # every built-in architecture (the ones a config can name) has a split
        return [], 0
    stages = split(backbone)
    return stages[:max(len(stages) - trainable, 0)], len(stages)


def augment_settings(tc: TrainConfig) -> AugmentSettings:
    """``train.augment`` as the augmenter's settings."""
    a = tc.augment
    return AugmentSettings(crop_scale=(a.crop_min_scale, 1.0), flip_p=a.flip_p, jitter_strength=a.jitter_strength,
                           jitter_p=a.jitter_p, grayscale_p=a.grayscale_p, blur_p=a.blur_p)


class StopOnSigint:
    """First Ctrl-C sets ``requested`` (the loop checkpoints and returns); a second raises at once."""

    def __init__(self) -> None:
        self.requested = interrupt_acknowledged()  # a Ctrl-C whose KeyboardInterrupt a finaliser swallowed
        self._previous: Any = None

    def __enter__(self) -> "StopOnSigint":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        say_now("stopping: finishing the current step, then saving a checkpoint… (Ctrl-C again to stop at once)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
