"""``evaluate --near-duplicates``: can the collection find an image again after a typical edit?

For a seeded sample of the collection's images, edited copies are written to a temporary folder
outside ``data.image_root`` (never into the collection, never into the DB, which is opened read-only)
and each copy is queried as an outside image, exactly like ``query --image`` (decode, features and
embedding by ``Recommender.image_from_path``). Reported per edit, as the fraction of copies whose
original is ranked first / in the top 5:

* embedding, color, dhash, fused: exhaustive exact ranking of every image by that score (fused =
  configured weights), ties to the smaller id as in ``query``;
* query: what a user gets: ``Recommender.query`` (ANN candidates + re-rank with the configured weights +
  the same-photo tier, ``query.same_photo_*``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from imagerec.data import loading
from imagerec.config import Config
from imagerec.errors import EvaluationError, ImageLoadError
from imagerec.eval.report import table_lines
from imagerec.progress import ProgressCallback, report as report_progress
from imagerec.search.fusion import QueryImage, Weights, score_candidates
from imagerec.search.recommender import Recommender
from imagerec.store.records import absolute_path, sample_ids

SIGNALS = ("embedding", "color", "dhash", "fused", "query")
TOP = (1, 5)


@dataclass(frozen=True)
class Edit:
    """One edit: ``apply(image, rng)`` → (edited image, Pillow save options incl. "format")."""

    name: str
    description: str
    apply: Callable[[Image.Image, np.random.Generator], tuple[Image.Image, dict[str, Any]]]


_PNG = {"format": "PNG"}  # lossless, so a copy differs from its original by the edit only


def _crop(area_removed: float):
    def apply(img: Image.Image, rng: np.random.Generator):
        w, h = img.size
        side = np.sqrt(1.0 - area_removed)
        cw, ch = max(1, round(w * side)), max(1, round(h * side))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch)), _PNG
    return apply


def _rescale(img, rng):
    w, h = img.size
    return img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS), _PNG


def _jpeg(img, rng):
    return img, {"format": "JPEG", "quality": int(rng.integers(20, 31))}


def _rotate(img, rng):
    angle = float(rng.uniform(2.0, 5.0) * rng.choice([-1, 1]))
    return img.rotate(angle, Image.Resampling.BICUBIC, expand=False), _PNG


def _brightness_contrast(img, rng):
    img = ImageEnhance.Brightness(img).enhance(float(rng.choice([0.75, 1.25])))
    return ImageEnhance.Contrast(img).enhance(float(rng.choice([0.8, 1.2]))), _PNG


def _flip(img, rng):
    return ImageOps.mirror(img), _PNG


def _border(img, rng):
    width = max(2, round(0.05 * min(img.size)))
    return ImageOps.expand(img, border=width, fill=(255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)), _PNG


def _text(img, rng):
    img = img.copy()
    size = max(10, img.size[1] // 10)
    draw = ImageDraw.Draw(img)
    draw.text((size // 2, img.size[1] - size * 3 // 2), "(c) imagerec 2024", fill=(255, 255, 255),
              font=ImageFont.load_default(size), stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return img, _PNG


EDITS: tuple[Edit, ...] = (
    Edit("crop10", "centre crop keeping 90% of the area", _crop(0.10)),
    Edit("crop30", "centre crop keeping 70% of the area", _crop(0.30)),
    Edit("crop50", "centre crop keeping 50% of the area", _crop(0.50)),
    Edit("rescale0.5", "half width and height (Lanczos)", _rescale),
    Edit("jpeg20-30", "JPEG re-encode at quality 20-30", _jpeg),
    Edit("rotate2-5", "rotation by 2-5 degrees either way, black corners", _rotate),
    Edit("brightness-contrast", "brightness x0.75 or x1.25, then contrast x0.8 or x1.2", _brightness_contrast),
    Edit("hflip", "horizontal flip", _flip),
    Edit("border", "white or black border, 5% of the shorter side", _border),
    Edit("text", "caption drawn near the bottom-left corner", _text),
)


@dataclass
class NearDuplicateReport:
    images: int
    copies: int
    seed: int
    weights: Weights
    accuracy: dict[str, dict[str, dict[str, float]]]  # edit → signal → {"top1", "top5"}
    elapsed_s: float
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"near_duplicates": {
            "images": self.images, "copies": self.copies, "seed": self.seed, "weights": self.weights.as_dict(),
            "edits": self.accuracy, "edit_descriptions": {e.name: e.description for e in EDITS},
            "method": {"embedding/color/dhash/fused": "exhaustive exact ranking of every image",
                       "query": "Recommender.query: ANN candidates + re-rank + same-photo tier (what 'query --image' returns)"},
            "skipped": list(self.skipped), "elapsed_s": round(self.elapsed_s, 3)}}


@dataclass
class _Copy:
    edit: str
    original: int
    query: QueryImage


def near_duplicate_benchmark(config: Config, *, images: int = 50, seed: int = 0, weights: Weights | None = None,
                             embedder=None, progress: ProgressCallback | None = None) -> NearDuplicateReport:
    """Edit a seeded sample of ``images`` collection images and report how often each copy finds its original."""
    started = time.perf_counter()
    if images < 1:
        raise EvaluationError(f"--edits must be at least 1 (got {images})")
    rng = np.random.default_rng(seed)
    found = {e.name: {s: np.zeros(len(TOP)) for s in SIGNALS} for e in EDITS}
    skipped: list[str] = []
    with Recommender(config, embedder=embedder) as rec, _scratch_folder(config) as tmp:
        weights = weights or rec.weights
        picked = sample_ids(rec.store.embedding_ids(rec.model_id), images, seed)
        originals = rec.store.get_features(picked.tolist(), rec.model_id)
        copies: list[_Copy] = []
        for n, (orig_id, rel) in enumerate(zip(originals.ids.tolist(), originals.paths)):
            try:
                source = _load_full(config, rel)
            except ImageLoadError as exc:
                skipped.append(f"{rel.decode('utf-8', 'backslashreplace')}: {exc}")
                continue
            for edit in EDITS:
                edited, options = edit.apply(source, rng)
                path = Path(tmp) / f"{orig_id}_{edit.name}.{options['format'].lower()}"
                edited.save(path, **options)
                query = rec.image_from_path(path)
                copies.append(_Copy(edit.name, orig_id, query))
                results = rec.query([query], top_k=max(TOP), weights=weights).results
                ids = [r.id for r in results]
                found[edit.name]["query"] += [orig_id in ids[:t] for t in TOP]
            report_progress(progress, "near-duplicates", n + 1, len(originals))
        ranks = _exhaustive_ranks(rec, copies, weights)
    for copy, signal_ranks in zip(copies, ranks):
        for signal, rank in signal_ranks.items():
            found[copy.edit][signal] += [rank <= t for t in TOP]
    copies_done = len(copies)
    per_edit = copies_done // len(EDITS)
    accuracy = {edit: {s: {f"top{t}": float(v[i] / per_edit) if per_edit else 0.0 for i, t in enumerate(TOP)}
                       for s, v in signals.items()} for edit, signals in found.items()}
    return NearDuplicateReport(per_edit, copies_done, seed, weights, accuracy, time.perf_counter() - started, skipped)


def _exhaustive_ranks(rec: Recommender, copies: list[_Copy], weights: Weights) -> list[dict[str, int]]:
    """Rank of each copy's original under each signal, counting images that beat it (ties: smaller id first)."""
    measure = rec.settings.color_measure
    signals = ("embedding", "color", "dhash", "fused")
    originals = {c.original for c in copies}
    rows = rec.space.rows(rec.store.get_features(sorted(originals), rec.model_id))
    row_of = {int(i): r for r, i in enumerate(rows.ids)}
    queries = rec.space.queries([c.query for c in copies])
    own = []
    for c, query in zip(copies, queries):
        s = score_candidates([query], rows, measure)
        r = row_of[c.original]
        own.append({"embedding": s.embedding[r], "color": s.color[r], "dhash": s.dhash[r], "fused": s.fused(weights)[r]})
    beaten = [dict.fromkeys(signals, 0) for _ in copies]
    for chunk in rec.store.iter_features(rec.model_id):
        chunk = rec.space.rows(chunk)
        for c, query, base, count in zip(copies, queries, own, beaten):
            s = score_candidates([query], chunk, measure)
            values = {"embedding": s.embedding, "color": s.color, "dhash": s.dhash, "fused": s.fused(weights)}
            others = chunk.ids != c.original
            for name in signals:
                better = (values[name] > base[name]) | ((values[name] == base[name]) & (chunk.ids < c.original))
                count[name] += int((better & others).sum())
    return [{name: count[name] + 1 for name in signals} for count in beaten]


def _load_full(config: Config, rel: bytes):
    """The original at full resolution (no draft reduction), through the same safe loader as ``index``."""
    settings = loading.LoadSettings.from_config(config.index, min_side=1 << 30)
    return loading.load_path(Path(os.fsdecode(absolute_path(config.data.image_root, rel))), settings).image


@contextmanager
def _scratch_folder(config: Config) -> Iterator[str]:
    """A temporary folder that is provably outside the collection, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="imagerec-near-duplicates-") as tmp:
        root, here = os.path.realpath(config.data.image_root), os.path.realpath(tmp)
        if os.path.commonpath([root, here]) == root:
            raise EvaluationError(f"the temporary folder {here} would be inside data.image_root {root}; "
                                  "set TMPDIR to a folder outside the collection")
        yield tmp


def format_near_duplicates(report: NearDuplicateReport, markdown: bool = False) -> str:
    """Top-1 / top-5 accuracy per edit (rows) and signal (columns)."""
    w = report.weights
    head = (f"near-duplicates: {report.images} images x {len(EDITS)} edits = {report.copies} copies (seed {report.seed}); "
            f"top-1 / top-5 accuracy of finding the original; embedding/color/dhash/fused: exhaustive ranking, "
            f"query: ANN + re-rank + same-photo tier as 'query --image'; weights {w.embedding:.2f}/{w.color:.2f}/{w.dhash:.2f}")
    rows = [[edit, *(f"{report.accuracy[edit][s]['top1']:.3f} / {report.accuracy[edit][s]['top5']:.3f}" for s in SIGNALS)]
            for edit in report.accuracy]
    lines = [head, ""] if markdown else [head]
    lines += table_lines(["edit", *SIGNALS], rows, markdown) + ([""] if markdown else [])
    lines += [f"skipped {s}" for s in report.skipped]
    lines.append(f"({report.elapsed_s:.1f} s)")
    return "\n".join(lines)
