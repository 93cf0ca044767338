"""``viz-2d``: a 2-D map of the embedding space.

A seeded uniform sample (without replacement) of the images that have an embedding of the current
model is read from SQLite, reduced to 50 dimensions with PCA and then to 2 with scikit-learn's t-SNE
(Barnes-Hut, PCA init), and drawn with matplotlib (Agg). Points are coloured by the image's top-level
folder when there are at most ``MAX_LEGEND_GROUPS`` of them; ``thumbnails=True`` draws small
thumbnails instead of dots. openTSNE is faster (6.7 s vs 11.3 s for 2,000 points, docs/ceilings.md)
but is not a dependency; scikit-learn with PCA-50 pre-reduction is fast enough at 2,000 points.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagerec.config import Config
from imagerec.errors import ImagerecError
from imagerec.store import Store
from imagerec.store.records import absolute_path, sample_ids, top_folder

MAX_LEGEND_GROUPS = 20
THUMB_PX = 28


@dataclass
class VizSummary:
    output: Path
    points: int
    groups: int
    tsne_s: float
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "points": self.points, "groups": self.groups,
                "tsne_s": self.tsne_s, "elapsed_s": self.elapsed_s}


def embed_2d(vectors: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, d) → (n, 2) with PCA-50 then t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(vectors)
    x = np.asarray(vectors, dtype=np.float32)
    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)


def plot_embeddings_2d(config: Config, *, sample_size: int = 2000, output: str | os.PathLike, thumbnails: bool = False,
                       seed: int = 0, perplexity: float = 30.0) -> VizSummary:
    started = time.perf_counter()
    output = Path(output)
    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.model_id
        ids = store.embedding_ids(model_id) if model_id else np.zeros(0, np.int64)
        if len(ids) < 3:
            raise ImagerecError(f"{config.output.layout.db}: need at least 3 images with embeddings for viz-2d (have {len(ids)}); run 'index'")
        rows = store.get_features(sample_ids(ids, sample_size, seed).tolist(), model_id)
    t0 = time.perf_counter()
    xy = embed_2d(rows.embeddings, seed, perplexity)
    tsne_s = time.perf_counter() - t0
    groups = [top_folder(p) for p in rows.paths]
    counts = Counter(groups)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 10), dpi=100)
    colored = len(counts) <= MAX_LEGEND_GROUPS
    if thumbnails:
        _draw_thumbnails(ax, xy, rows.paths, config)
    if colored:
        cmap = plt.get_cmap("tab20", max(len(counts), 1))
        for i, name in enumerate(sorted(counts)):
            mask = np.array([g == name for g in groups])
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6 if thumbnails else 12, color=cmap(i), label=f"{name} ({counts[name]})",
                       alpha=0.9, zorder=3 if thumbnails else 2)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, title="top-level folder")
    elif not thumbnails:
        ax.scatter(xy[:, 0], xy[:, 1], s=8, color="tab:blue", alpha=0.7)
    ax.set_title(f"t-SNE of {len(rows)} embeddings (model {model_id}, seed {seed})"
                 + ("" if colored else f"; {len(counts)} folders, too many to colour"))
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, format="png")
    except OSError as exc:
        raise ImagerecError(f"{output}: cannot write plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return VizSummary(output, len(rows), len(counts), tsne_s, time.perf_counter() - started)


def _draw_thumbnails(ax, xy: np.ndarray, paths: list[bytes], config: Config) -> None:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from PIL import Image

    from imagerec.data import loading
    from imagerec.data.scan import format_hint

    settings = loading.LoadSettings.from_config(config.index, THUMB_PX)
    ax.scatter(xy[:, 0], xy[:, 1], s=0)  # sets the data limits
    for (x, y), rel in zip(xy, paths):
        try:
            image = loading.load_image(absolute_path(config.data.image_root, rel), settings, format_hint(rel)).image
        except loading.ImageLoadError:
            continue
        image = image.copy()
        image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR)
        ax.add_artist(AnnotationBbox(OffsetImage(np.asarray(image), zoom=1.0), (x, y), frameon=False, zorder=1))
