"""``imagerec duplicates`` benchmark: quality on real photos with planted copies, and speed/memory at 100k–550k.

Quality (``--quality``): 2,000 Caltech-101 photos plus, for 300 of them, one copy per edit (resize 50 %,
JPEG q30, crop 5–15 %, brightness ±20 %, PNG re-save, rotation 1–3°) and one exact byte copy
(``bench/dupes_dataset.py``), indexed with the default config (pretrained EfficientNet-Lite0, 224 px) and
``build-ann``. A found pair is two files in one group; it is true iff both come from the same source photo.
Reported: precision over all found pairs, recall of each (original, copy) pair per edit, per tier;
``--sweep`` also tries neighbouring thresholds (how the defaults were chosen). ``--no-embeddings`` runs
the same on the hashes and colours alone.

Speed (``--n 100000 550000``): the ANN benchmark store of ``bench/bench_ann.py`` (real Caltech features
plus synthetic rows near them) with planted near-duplicates, ``imagerec duplicates --json`` run in a
child process: wall time, peak RSS, groups found, planted pairs recovered.

    .venv/bin/python bench/bench_duplicates.py --quality [--sweep] [--no-embeddings]
    .venv/bin/python bench/bench_duplicates.py --n 100000 550000
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ann import CALTECH, OUT, log  # noqa: E402
from dupes_dataset import EDITS, EXACT, edit_of, family, make_quality_folder  # noqa: E402

QUALITY = OUT / "dupes_quality"
#: ``python -c PEAK_RSS <imagerec args>``: the CLI, then its own peak RSS on stderr (not the max over earlier children)
PEAK_RSS = ("import resource, runpy, sys\nsys.argv = ['imagerec', *sys.argv[1:]]\ntry:\n    runpy.run_module('imagerec', "
            "run_name='__main__')\nfinally:\n    print(f'peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', "
            "file=sys.stderr)")


def quality_collection(embeddings: bool) -> Path:
    """Config of the indexed quality folder (made, indexed and ANN-built on first use)."""
    images = make_quality_folder(CALTECH, QUALITY / "images")
    out = QUALITY / ("out" if embeddings else "out_hashes")
    cfg = QUALITY / ("config.yaml" if embeddings else "config_hashes.yaml")
    raw = {"data": {"image_root": str(images)}, "output": {"dir": str(out)}}
    if not embeddings:  # the seed's model without a model file: hashes and colours only
        raw["model"] = {"arch": "resnet18", "init": "random"}
    cfg.write_text(yaml.safe_dump(raw))
    if not (out / "images.db").exists():
        log(f"indexing {images} ({'with' if embeddings else 'without'} embeddings)")
        subprocess.run([sys.executable, "-m", "imagerec", "--config", str(cfg), "index", "-q"], check=True)
        if embeddings:
            subprocess.run([sys.executable, "-m", "imagerec", "--config", str(cfg), "build-ann"], check=True)
    return cfg


def score(report, images: Path) -> dict[str, float]:
    """Precision of found pairs; recall of (original, copy) pairs per edit and overall."""
    found, tp, fp = set(), 0, 0
    for group in report.groups:
        for x, y in itertools.combinations(group.members, 2):
            if family(x.relpath) == family(y.relpath):
                tp += 1
                found.add(frozenset((x.relpath, y.relpath)))
            else:
                fp += 1
    originals = {family(str(p)): str(p.relative_to(images)) for p in (images / "orig").iterdir()}
    hits = collections.defaultdict(list)
    for p in images.rglob("*.*"):
        rel = str(p.relative_to(images))
        if not p.name.startswith(".") and edit_of(rel) != "orig":
            hits[edit_of(rel)].append(frozenset((originals[family(rel)], rel)) in found)
    out = {"precision": tp / max(1, tp + fp), "false_pairs": fp, "groups": report.n_groups}
    out.update({edit: float(np.mean(hits[edit])) for edit in (*EDITS, EXACT)})
    out["recall"] = float(np.mean([h for v in hits.values() for h in v]))
    return out


def run_quality(args) -> None:
    from imagerec.config import load_config
    from imagerec.dedup import DuplicateSettings, find_duplicates

    config = load_config(quality_collection(not args.no_embeddings))
    base = DuplicateSettings.from_config(config)
    trials = [("default", base)]
    if args.sweep:
        for key, values in {"max_bits": [8, 12], "near_similarity": [0.88, 0.92], "min_similarity": [0.92, 0.96],
                            "group_similarity": [0.65, 0.75, 0.8], "neighbours": [3, 5, 10]}.items():
            trials += [(f"{key}={v}", replace(base, **{key: v})) for v in values]
    trials += [(f"tier={t}", replace(base, tier=t)) for t in ("exact", "near")]
    cols = ["precision", "false_pairs", "recall", *EDITS, EXACT, "groups", "time_s"]
    print("| settings | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for name, settings in trials:
        t0 = time.perf_counter()
        report = find_duplicates(config, settings)
        row = {**score(report, config.data.image_root), "time_s": time.perf_counter() - t0}
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |",
              flush=True)


def speed_store(n: int, planted: int, seed: int = 0) -> tuple[Path, np.ndarray]:
    """An n-row store: the real Caltech-101 rows (random-init ResNet-18 at 96 px, as in ``bench_ann.py``), synthetic
    rows that are *not* duplicates (a real row's embedding plus noise, cosine ~0.75 to it; its dHash with 16 random
    bits flipped; its histogram), and ``planted`` near-copies of real rows (≤ 4 dHash bits, cosine ~0.97). The
    planted copies and their originals get real (tiny) files, so the duplicate finder's file checks pass.
    Returns (config path, planted (copy id, original id) pairs)."""
    from imagerec.store import Store

    dest = OUT / f"dupes_{n}"
    cfg = dest / "config.yaml"
    if cfg.exists() and (dest / "planted.json").exists():
        return cfg, np.asarray(json.loads((dest / "planted.json").read_text()))
    src = default_collection()
    with Store(src / "images.db", readonly=True) as s:
        model_id = s.model_id
        real = list(s.iter_features(model_id))
    emb = np.concatenate([r.embeddings for r in real])
    hist = np.concatenate([r.histograms for r in real])
    hashes = np.concatenate([r.dhashes for r in real]).view(np.uint64)
    n_real = len(emb)
    rng = np.random.default_rng(seed)
    copies = set(rng.choice(np.arange(n_real, n), size=planted, replace=False).tolist())
    sources = {c: int(rng.integers(0, n_real)) for c in sorted(copies)}
    source_rows = set(sources.values())
    files = dest / "images"
    files.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with Store(dest / "images.db") as store:
        store.set_model_id(model_id, "imagenet")
        for start in range(0, n, 5000):
            records = [_speed_row(k, n_real, emb, hist, hashes, sources, source_rows, rng, model_id) for k in range(start, min(n, start + 5000))]
            store.write_batch(records)
        for rec_path in {p for c, s in sources.items() for p in (b"real/%07d" % s, b"copy/%07d" % c)}:
            target = files / rec_path.decode()
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(rec_path)  # distinct content: no two are byte-identical
            os.utime(target, ns=(1, 1))
    log(f"store with {n} rows written in {time.perf_counter() - t0:.1f} s")
    cfg.write_text(yaml.safe_dump({"data": {"image_root": str(files)}, "output": {"dir": str(dest)},
                                   "runtime": {"threads": 2}, "ann": {"threads": 2}}))
    ids = sorted(sources)  # row k gets id k + 1
    pairs = [[c + 1, sources[c] + 1] for c in ids]
    (dest / "planted.json").write_text(json.dumps(pairs))
    return cfg, np.asarray(pairs)


def default_collection() -> Path:
    """All of Caltech-101 indexed with the default config (pretrained EfficientNet-Lite0, 224 px, 1280-d); made once."""
    out = OUT / "caltech101_default"
    if not (out / "images.db").exists():
        out.mkdir(parents=True, exist_ok=True)
        cfg = out / "config.yaml"
        cfg.write_text(yaml.safe_dump({"data": {"image_root": str(CALTECH)}, "output": {"dir": str(out)}}))
        log(f"indexing {CALTECH} with the default embedder (one-off, ~2 min on 2 cores)")
        subprocess.run([sys.executable, "-m", "imagerec", "--config", str(cfg), "index", "-q"], check=True)
    return out


def _speed_row(k, n_real, emb, hist, hashes, sources, source_rows, rng, model_id):
    from imagerec.store import ImageRecord

    j = sources.get(k, k % n_real)
    d = emb.shape[1]
    vec = emb[j].copy()
    if k in sources:
        vec += rng.normal(scale=0.27 / np.sqrt(d), size=vec.shape).astype(np.float32)
        flips = rng.choice(64, size=int(rng.integers(0, 5)), replace=False)
        path = b"copy/%07d" % k
    elif k >= n_real:
        vec += rng.normal(scale=0.9 / np.sqrt(d), size=vec.shape).astype(np.float32)
        flips = rng.choice(64, size=16, replace=False)
        path = b"syn/%07d" % k
    else:
        flips = np.zeros(0, int)
        path = b"real/%07d" % k
    mask = np.uint64(sum(1 << int(b) for b in flips))
    size = len(path) if (k in sources or k in source_rows) else 1
    return ImageRecord(path, size, 1, 96, 96, "JPEG", hist[j], "rgb8x8x8-side128", int((hashes[j] ^ mask).view(np.int64)),
                       vec / np.linalg.norm(vec), model_id)


def build_if_stale(cfg: Path) -> float | None:
    """``build-ann`` unless the store's index is current; its wall seconds (None: reused)."""
    from imagerec.ann.load import ann_state
    from imagerec.config import load_config
    from imagerec.store import Store

    config = load_config(cfg)
    with Store(config.output.layout.db, readonly=True) as store:
        state = ann_state(config.output.layout, data_version=store.data_version, model_id=store.model_id)
    if state is not None and state["state"] == "current":
        return None
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imagerec", "--config", str(cfg), "build-ann"], check=True)
    return time.perf_counter() - t0


def run_speed(args) -> None:
    print("| images | build-ann s | duplicates wall s | peak RSS MiB | stages | groups | planted pairs found |\n|---|---|---|---|---|---|---|")
    for n in args.n:
        cfg, planted = speed_store(n, args.planted)
        build_s = build_if_stale(cfg)
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", PEAK_RSS, "--config", str(cfg), "duplicates", "--json"],
                             check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        out, rss = run.stdout, int(run.stderr.split("peak_rss_kib=")[-1]) / 1024
        report = json.loads(out)
        grouped = {}
        for k, g in enumerate(report["groups"]):
            grouped.update({m["id"]: k for m in g["members"]})
        found = np.mean([grouped.get(int(c), -1) == grouped.get(int(s), -2) for c, s in planted])
        stages = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in report["timings"].items() if k != "total_s")
        print(f"| {n:,} | {'reused' if build_s is None else f'{build_s:.0f}'} | {wall:.1f} | {rss:.0f} | {stages} | {report['n_groups']:,} | {found:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quality", action="store_true", help="Precision/recall on Caltech-101 photos with planted copies.")
    ap.add_argument("--sweep", action="store_true", help="With --quality: also neighbouring thresholds.")
    ap.add_argument("--no-embeddings", action="store_true", help="With --quality: a collection indexed without embeddings.")
    ap.add_argument("--n", type=int, nargs="*", default=[], help="Store sizes for the speed benchmark, e.g. 100000 550000.")
    ap.add_argument("--planted", type=int, default=1000, help="Near-duplicate pairs planted in the speed store.")
    args = ap.parse_args()
    if args.quality:
        run_quality(args)
    if args.n:
        run_speed(args)


if __name__ == "__main__":
    main()
