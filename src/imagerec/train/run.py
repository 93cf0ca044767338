"""The ``train-embeddings`` stage: SimCLR on the user's own images.

Pipeline: scan → seeded subset of ``train.max_images`` → decode once into a uint8 memmap
(``train_cache``) → seeded train/val split → per step, a batch read from the memmap (prefetched by
a thread) → two views by batched per-sample augmentation on the training device → ResNet-18 +
projection head → NT-Xent → optimiser step with warm-up + cosine schedule.

Every epoch: validation (NT-Xent on fixed views of the val split, and precision@10 of cosine
neighbours when images sit in class folders), one log line to the caller and to
``output.dir/train_log.jsonl``, the best backbone so far to ``output.dir/embedding_model.pt`` and
a full checkpoint (model, head, optimiser, scheduler, position, RNG states) written atomically to
``output.dir/checkpoints/checkpoint.pt``. ``resume=True`` continues exactly where the checkpoint
left off, mid-epoch included. The first Ctrl-C finishes the current step, checkpoints and returns;
a second one stops at once (the last checkpoint is kept).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imagerec.data import loading
from imagerec.train.augment import AugmentSettings, SimCLRAugment
from imagerec.config import Config
from imagerec.errors import Interrupted, TrainError
from imagerec.embed.files import ModelSpec, atomic_torch_save, build_backbone, load_tagged_payload, save_model, select_device
from imagerec.eval.metrics import retrieval_scores
from imagerec.data.scan import ScannedFile, scan_images
from imagerec.train.simclr import NTXentLoss, ProjectionHead
from imagerec.train.cache import TrainCache, open_or_build_cache

CHECKPOINT_FORMAT = "imagerec.train_checkpoint"
CHECKPOINT_VERSION = 1
LOG_NAME = "train_log.jsonl"
SYNC_EVERY = 20  # steps between loss read-backs (each one waits for the GPU)
DEFAULT_LR = {"sgd": 0.15, "adamw": 1e-3}  # per 256 images
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.05}


@dataclass
class EpochLog:
    """One epoch's figures, as written to ``train_log.jsonl``."""

    run: str
    epoch: int  # 1-based
    epochs: int
    step: int  # optimiser steps so far
    train_loss: float
    val_loss: float | None
    val_p_at_10: float | None
    val_map: float | None
    lr: float
    images_per_s: float  # training images (pairs of views) per second, validation excluded
    train_s: float
    val_s: float
    best: bool

    def line(self) -> str:
        parts = [f"epoch {self.epoch}/{self.epochs}", f"train_loss {self.train_loss:.4f}"]
        if self.val_loss is not None:
            parts.append(f"val_loss {self.val_loss:.4f}")
        if self.val_p_at_10 is not None:
            parts.append(f"val_P@10 {self.val_p_at_10:.3f}")
        parts += [f"lr {self.lr:.4g}", f"{self.images_per_s:.1f} img/s", f"{self.train_s + self.val_s:.1f} s"]
        return "  ".join(parts) + ("  *best" if self.best else "")


@dataclass
class TrainSummary:
    """What one ``train_embeddings`` call did."""

    model_path: Path
    model_id: str | None  # id of the best model written so far (None if no epoch finished)
    checkpoint_path: Path
    log_path: Path
    start_epoch: int  # epochs already done when this call started
    epochs_done: int  # epochs done when it returned
    epochs: int
    train_images: int
    val_images: int
    skipped: list[tuple[str, str]]  # (path, reason) of images that could not be decoded
    best_metric: str  # "val_p@10", "val_loss" or "last"
    best_value: float | None
    best_epoch: int | None
    cache_built: bool
    wall_s: float
    interrupted: bool
    history: list[EpochLog] = field(default_factory=list)


@dataclass(frozen=True)
class _Data:
    cache: TrainCache
    train_rows: np.ndarray
    val_rows: np.ndarray
    labels: np.ndarray | None  # class code per cache row, when images sit in class folders


class WarmupCosine:
    """LR multiplier per step: linear warm-up to 1, then cosine decay to 0 (a picklable LambdaLR rule)."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_embeddings(
    config: Config,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochLog], bool | None] | None = None,
) -> TrainSummary:
    """Train the embedding model as ``config.train`` says; returns a summary.

    ``progress`` shows tqdm bars; ``log`` receives one line per epoch (and notes); ``on_epoch`` is
    called after each epoch's checkpoint and may return True to stop there (like Ctrl-C).
    """
    started = time.perf_counter()
    tc = config.train
    say = log or (lambda line: None)
    device = select_device(config.runtime.device)
    if device.type == "cpu":
        torch.set_num_threads(config.runtime.threads or os.cpu_count() or 1)
    ckpt_path = config.output.layout.checkpoints_dir / "checkpoint.pt"
    if resume and not ckpt_path.exists():
        raise TrainError(f"no checkpoint at {ckpt_path}; start without --resume")
    data = _prepare_data(config, progress, say)
    spec = ModelSpec(stem=tc.stem, image_size=tc.image_size)
    batch = min(tc.batch_size, len(data.train_rows))
    if batch < tc.batch_size:
        say(f"note: only {len(data.train_rows)} training images; batch size lowered to {batch}")
    steps_per_epoch = len(data.train_rows) // batch
    channels_last = tc.channels_last if tc.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    torch.manual_seed(tc.seed)
    backbone = build_backbone(spec).to(device, memory_format=memory_format)
    head = ProjectionHead().to(device)
    optimizer = _make_optimizer(tc.optimizer, [backbone, head], _peak_lr(tc.optimizer, tc.lr, batch), _weight_decay(tc))
    total_steps = tc.epochs * steps_per_epoch
    schedule = WarmupCosine(round(tc.warmup_epochs * steps_per_epoch), total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    augment_gen = torch.Generator(device=device).manual_seed(tc.seed)
    compat = {"cache_key": data.cache.key, "image_size": tc.image_size, "stem": tc.stem, "batch_size": batch,
              "seed": tc.seed, "val_fraction": tc.val_fraction, "optimizer": tc.optimizer}
    state = _RunState(run=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if resume:
        state = _load_checkpoint(ckpt_path, compat, backbone, head, optimizer, scheduler, augment_gen)
        scheduler.lr_lambdas[0] = schedule  # the epoch count may have changed; the step count carries on
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * schedule(scheduler.last_epoch)
        say(f"resuming at epoch {state.epoch + 1}, step {state.step_in_epoch}/{steps_per_epoch} of it")
    elif ckpt_path.exists():
        say(f"note: starting afresh; {ckpt_path} will be replaced (use --resume to continue it)")

    trainer = _Trainer(config, data, spec, device, memory_format, backbone, head, optimizer, scheduler,
                       augment_gen, NTXentLoss(tc.temperature), batch, steps_per_epoch, compat, ckpt_path, state)
    interrupted = False
    try:
        with _StopOnSigint() as stop:
            interrupted = trainer.run(stop, progress, say, on_epoch)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped at once; the last checkpoint in {ckpt_path.parent} is kept "
                          "(continue with --resume)") from None
    best = state.best
    return TrainSummary(
        model_path=config.output.layout.model, model_id=state.best_model_id, checkpoint_path=ckpt_path,
        log_path=config.output.layout.train_log, start_epoch=trainer.start_epoch, epochs_done=state.epoch, epochs=tc.epochs,
        train_images=len(data.train_rows), val_images=len(data.val_rows), skipped=data.cache.skipped,
        best_metric=best["metric"], best_value=best["value"], best_epoch=best["epoch"], cache_built=data.cache.built,
        wall_s=time.perf_counter() - started, interrupted=interrupted, history=[EpochLog(**h) for h in state.history],
    )


# ---------------------------------------------------------------------------------------------- data


def select_files(config: Config) -> list[ScannedFile]:
    """The training files: those under data.image_root (optionally only ``train.file_list``), a seeded
    random subset of at most ``train.max_images``, in path order. Reservoir sampling keeps memory
    bounded by ``max_images`` however large the collection."""
    tc = config.train
    root = Path(config.data.image_root)
    if not root.is_dir():
        raise TrainError(f"data.image_root: {root} is not a folder; fix it in {config.source or 'the config'}")
    wanted = _read_file_list(config) if tc.file_list is not None else None
    rng = random.Random(tc.seed)
    reservoir: list[ScannedFile] = []
    seen = 0
    for scanned in scan_images(root, follow_symlinks=config.index.follow_symlinks):
        if scanned.format_hint not in config.index.formats or (wanted is not None and scanned.rel_path not in wanted):
            continue
        seen += 1
        if len(reservoir) < tc.max_images:
            reservoir.append(scanned)
        else:
            j = rng.randrange(seen)
            if j < tc.max_images:
                reservoir[j] = scanned
    return sorted(reservoir, key=lambda f: f.rel_path)


def _read_file_list(config: Config) -> set[bytes]:
    path = Path(os.path.expanduser(config.train.file_list))
    if not path.is_absolute():
        path = (config.source.resolve().parent if config.source else Path.cwd()) / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TrainError(f"train.file_list: cannot read {path} ({exc.strerror or exc})") from None
    return {os.fsencode(line.strip()) for line in lines if line.strip()}


def _prepare_data(config: Config, progress: bool, say: Callable[[str], None]) -> _Data:
    tc = config.train
    files = select_files(config)
    if len(files) < 2:
        raise TrainError(f"found {len(files)} image(s) under {config.data.image_root}; training needs at least 2")
    load = loading.LoadSettings.from_config(config.index, tc.image_size)
    bar = _bar(progress, len(files), "decoding (once)")
    try:
        cache = open_or_build_cache(Path(config.data.image_root), files, tc.image_size, config.output.layout.cache_dir, load,
                                    tc.workers or os.cpu_count() or 1, progress=bar.update)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while building the training cache; nothing was kept") from None
    finally:
        bar.close()
    if cache.built:
        say(f"decoded {cache.decoded} images into {config.output.layout.cache_dir}")
    if cache.skipped:
        shown = ", ".join(f"{p} ({r})" for p, r in cache.skipped[:5])
        say(f"skipped {len(cache.skipped)} image(s) that could not be decoded: {shown}" + (" ..." if len(cache.skipped) > 5 else ""))
    rows = np.flatnonzero(cache.ok)
    if len(rows) < 2:
        raise TrainError(f"only {len(rows)} decodable image(s); training needs at least 2")
    rng = np.random.default_rng([tc.seed, 1])
    order = rng.permutation(rows)
    n_val = int(round(tc.val_fraction * len(rows)))
    if 0 < n_val < 2 or len(rows) - n_val < 2:
        n_val = 2 if len(rows) >= 4 and tc.val_fraction > 0 else 0
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    return _Data(cache, train_rows, val_rows, _folder_labels(cache.paths))


def _folder_labels(paths: list[str]) -> np.ndarray | None:
    """Class code per path from its top-level folder, when every image sits in one and there are >= 2."""
    if not paths or any("/" not in p for p in paths):
        return None
    tops = [p.split("/", 1)[0] for p in paths]
    classes, codes = np.unique(np.asarray(tops), return_inverse=True)
    return codes if len(classes) >= 2 else None


def _batches(images: np.ndarray, index_lists: list[np.ndarray], pin: bool) -> Iterator[torch.Tensor]:
    """Uint8 NHWC batches read from the memmap, the next one prefetched by a thread."""

    def read(rows: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.take(images, rows, axis=0))
        return tensor.pin_memory() if pin else tensor

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(read, index_lists[0]) if index_lists else None
        for i in range(len(index_lists)):
            current = pending.result()
            pending = pool.submit(read, index_lists[i + 1]) if i + 1 < len(index_lists) else None
            yield current


# ---------------------------------------------------------------------------------------------- loop


@dataclass
class _RunState:
    """Where training stands; everything here goes into the checkpoint."""

    run: str
    epoch: int = 0  # epochs completed (0-based index of the epoch in progress)
    step_in_epoch: int = 0  # steps of that epoch already done
    global_step: int = 0
    loss_sum: float = 0.0  # of the epoch in progress
    loss_count: int = 0
    train_s: float = 0.0
    best: dict[str, Any] = field(default_factory=lambda: {"metric": "last", "value": None, "epoch": None})
    best_model_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class _Trainer:
    def __init__(self, config, data, spec, device, memory_format, backbone, head, optimizer, scheduler,
                 augment_gen, loss_fn, batch, steps_per_epoch, compat, ckpt_path, state):
        self.config, self.tc, self.data, self.spec, self.device = config, config.train, data, spec, device
        self.memory_format = memory_format
        self.backbone, self.head, self.optimizer, self.scheduler = backbone, head, optimizer, scheduler
        self.augment_gen, self.loss_fn, self.batch, self.steps_per_epoch = augment_gen, loss_fn, batch, steps_per_epoch
        self.compat, self.ckpt_path, self.state = compat, ckpt_path, state
        self.start_epoch = state.epoch
        a = self.tc.augment
        self.augment = SimCLRAugment(AugmentSettings(
            crop_scale=(a.crop_min_scale, 1.0), flip_p=a.flip_p, jitter_strength=a.jitter_strength,
            jitter_p=a.jitter_p, grayscale_p=a.grayscale_p, blur_p=a.blur_p), out_size=spec.image_size)
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        self.autocast = device.type == "cuda"

    def run(self, stop: "_StopOnSigint", progress: bool, say, on_epoch) -> bool:
        """Train until ``epochs``; returns True when stopped early (Ctrl-C or ``on_epoch``)."""
        st = self.state
        while st.epoch < self.tc.epochs:
            if not self._train_epoch(stop, progress):
                self._checkpoint()
                say(f"stopped at epoch {st.epoch + 1}, step {st.step_in_epoch}/{self.steps_per_epoch}; "
                    f"checkpoint saved to {self.ckpt_path} (continue with --resume)")
                return True
            entry = self._end_epoch()
            say(entry.line())
            if (on_epoch and on_epoch(entry)) or stop.requested:
                say(f"stopped after epoch {entry.epoch}; checkpoint saved to {self.ckpt_path} (continue with --resume)")
                return True
        return False

    def _train_epoch(self, stop: "_StopOnSigint", progress: bool) -> bool:
        st, b = self.state, self.batch
        order = np.random.default_rng([self.tc.seed, st.epoch, 2]).permutation(len(self.data.train_rows))
        steps = [np.sort(self.data.train_rows[order[i * b:(i + 1) * b]]) for i in range(st.step_in_epoch, self.steps_per_epoch)]
        self.backbone.train()
        self.head.train()
        bar = _bar(progress, self.steps_per_epoch * b, f"epoch {st.epoch + 1}/{self.tc.epochs}", initial=st.step_in_epoch * b)
        every = self.tc.checkpoint_every_steps
        pending: list[torch.Tensor] = []  # losses not yet read back: reading forces a device sync

        def flush() -> None:
            if pending:
                st.loss_sum += float(torch.stack(pending).sum())
                pending.clear()

        try:
            t0 = time.perf_counter()
            for images in _batches(self.data.cache.images, steps, pin=self.device.type == "cuda"):
                pending.append(self._step(images))
                st.loss_count += 1
                st.step_in_epoch += 1
                st.global_step += 1
                stopping = stop.requested
                saving = bool(every) and st.global_step % every == 0
                if len(pending) >= SYNC_EVERY or stopping or saving or st.step_in_epoch == self.steps_per_epoch:
                    last = float(pending[-1])
                    flush()
                    bar.set_postfix(loss=f"{last:.3f}", refresh=False)
                now = time.perf_counter()
                st.train_s += now - t0
                t0 = now
                bar.update(b)
                if stopping:
                    return False
                if saving:
                    self._checkpoint()
                    t0 = time.perf_counter()
        finally:
            bar.close()
        return True

    def _step(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        views = torch.cat([self.augment(x, self.augment_gen), self.augment(x, self.augment_gen)])
        views = ((views - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            z = self.head(self.backbone(views))
        z1, z2 = z.float().chunk(2)
        loss = self.loss_fn(z1, z2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def _end_epoch(self) -> EpochLog:
        st = self.state
        v0 = time.perf_counter()
        val_loss, p10, mean_ap = self._validate()
        val_s = time.perf_counter() - v0
        train_loss = st.loss_sum / max(st.loss_count, 1)
        metric, value, better = self._best_candidate(val_loss, p10)
        st.epoch += 1
        entry = EpochLog(run=st.run, epoch=st.epoch, epochs=self.tc.epochs, step=st.global_step, train_loss=train_loss,
                         val_loss=val_loss, val_p_at_10=p10, val_map=mean_ap, lr=self.optimizer.param_groups[0]["lr"],
                         images_per_s=st.loss_count * self.batch / max(st.train_s, 1e-9), train_s=st.train_s, val_s=val_s,
                         best=better)
        if better:
            st.best = {"metric": metric, "value": value, "epoch": st.epoch}
            st.best_model_id = self._save_model(entry)
        st.history.append(asdict(entry))
        st.step_in_epoch, st.loss_sum, st.loss_count, st.train_s = 0, 0.0, 0, 0.0
        log_path = self.config.output.layout.train_log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(entry)) + "\n")
        self._checkpoint()
        return entry

    def _best_candidate(self, val_loss: float | None, p10: float | None) -> tuple[str, float | None, bool]:
        previous = self.state.best["value"]
        if p10 is not None:
            return "val_p@10", p10, previous is None or p10 > previous
        if val_loss is not None:
            return "val_loss", val_loss, previous is None or val_loss < previous
        return "last", None, True

    @torch.no_grad()
    def _validate(self) -> tuple[float | None, float | None, float | None]:
        rows = self.data.val_rows
        if len(rows) < 2:
            return None, None, None
        self.backbone.eval()
        self.head.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.tc.seed + 7919)  # the same views every epoch
        loss_total, count, embeddings = 0.0, 0, []
        chunks = [rows[i:i + self.batch] for i in range(0, len(rows), self.batch)]
        for images in _batches(self.data.cache.images, chunks, pin=self.device.type == "cuda"):
            x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            clean = self._normalise(x)
            views = self._normalise(torch.cat([self.augment(x, gen), self.augment(x, gen)]))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                h = self.backbone(torch.cat([clean, views]))
                z = self.head(h[len(x):])
            embeddings.append(F.normalize(h[: len(x)].float(), dim=1).cpu())
            if len(x) >= 2:
                z1, z2 = z.float().chunk(2)
                loss_total += float(self.loss_fn(z1, z2)) * len(x)
                count += len(x)
        val_loss = loss_total / count if count else None
        if self.data.labels is None:
            return val_loss, None, None
        scores = retrieval_scores(torch.cat(embeddings).numpy(), self.data.labels[rows], k=10)
        return val_loss, scores.precision_at_k, scores.mean_average_precision

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def _save_model(self, entry: EpochLog) -> str:
        st = self.state
        info = {
            "trainer": "imagerec.train (SimCLR)", "epochs": entry.epoch, "image_size": self.spec.image_size,
            "stem": self.spec.stem, "dataset_size": len(self.data.train_rows) + len(self.data.val_rows),
            "train_images": len(self.data.train_rows), "val_images": len(self.data.val_rows),
            "best_metric": st.best["metric"], "best_value": st.best["value"],
            "wall_s": sum(h["train_s"] + h["val_s"] for h in st.history) + entry.train_s + entry.val_s,
            "batch_size": self.batch, "optimizer": self.tc.optimizer, "temperature": self.tc.temperature,
            "seed": self.tc.seed,
        }
        return save_model(self.config.output.layout.model, self.backbone, self.spec, info)

    def _checkpoint(self) -> None:
        st = self.state
        payload = {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "compat": self.compat,
            "state": {k: v for k, v in asdict(st).items()},
            "backbone": self.backbone.state_dict(), "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(self.augment_gen),
        }
        atomic_torch_save(payload, self.ckpt_path)


def _load_checkpoint(path: Path, compat: dict[str, Any], backbone: nn.Module, head: nn.Module, optimizer, scheduler,
                     augment_gen: torch.Generator) -> _RunState:
    payload = load_tagged_payload(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TrainError, "training checkpoint",
                                  "start without --resume")
    saved = payload["compat"]
    changed = [k for k in compat if saved.get(k) != compat[k]]
    if changed:
        what = ", ".join(f"{k} {saved.get(k)!r} → {compat[k]!r}" for k in changed)
        raise TrainError(f"cannot resume: the checkpoint was made with different settings or images ({what}); "
                         "restore them or start without --resume")
    backbone.load_state_dict(payload["backbone"])
    head.load_state_dict(payload["head"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"], augment_gen)
    return _RunState(**payload["state"])


def _rng_state(augment_gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": augment_gen.get_state(),
    }


def _set_rng_state(state: dict[str, Any], augment_gen: torch.Generator) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    augment_gen.set_state(state["augment"])


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------- helpers


def _peak_lr(optimizer: str, lr: float | None, batch: int) -> float:
    return (lr if lr is not None else DEFAULT_LR[optimizer]) * batch / 256


def _weight_decay(tc) -> float:
    return tc.weight_decay if tc.weight_decay is not None else DEFAULT_WEIGHT_DECAY[tc.optimizer]


def _make_optimizer(name: str, modules: list[nn.Module], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            (decay if param.ndim > 1 else no_decay).append(param)  # biases and batch-norm scales: no decay
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


class _StopOnSigint:
    """First Ctrl-C sets ``requested`` (the loop checkpoints and returns); a second raises at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopOnSigint":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(enabled: bool, total: int, desc: str, initial: int = 0):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True, leave=False, smoothing=0.1)
