"""Benchmark `index` on photo-size images (8-24 MP), per format, side by side in one run.

The shared large photos are replicated under distinct names (hard links) into one folder per format
(JPEG, PNG, WebP encoded from the same photos, and a mix), under bench/out/photos/. Per folder:

1. index without embeddings, today's Pillow-only decoder (``index.decoder: pillow``) and the default
   (``auto``: libvips for PNG/WebP), vs the fastest bare decoder loop (read + scaled decode + RGB) with
   the same worker count (target >= 0.90);
2. index with the default embedder (pretrained EfficientNet-Lite0, ONNX Runtime) at 160/192/224 px vs the
   bound for decode and model sharing the same cores, 1 / (1/decode_rate + 1/model_rate), where
   decode_rate is the bare loop at that size on all workers and model_rate the embedder alone on
   pre-decoded inputs on all threads (target >= 0.85);
3. projected hours for 550,000 images; peak RSS of one worker decoding a 24-MP PNG (auto vs pillow).

Usage:
    .venv/bin/python bench/bench_photos.py                  # ~100 files per format, 2 workers
    .venv/bin/python bench/bench_photos.py --per-format 40 --sizes 224 --repeat 1   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import ExifTags, Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagerec.config import load_config  # noqa: E402
from imagerec.data.features import decode_min_side  # noqa: E402

# torch, the store and the embedders are imported where they are used: the bare loop's spawned workers
# import this module and must start as light as `index`'s decode workers.

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_SOURCE = SHARED / "large-photos"
OUT = Path(__file__).resolve().parent / "out" / "photos"
FORMATS = {"jpeg": (".jpg", ".jpeg"), "png": (".png",), "webp": (".webp",)}
PROJECTED = 550_000


def build_folders(source: Path, per_format: int, into: Path) -> dict[str, Path]:
    """One folder per format with ``per_format`` files (hard links of the sources under distinct names), and a mix."""
    originals = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    webp_dir = into / "webp-sources"
    webp_dir.mkdir(parents=True, exist_ok=True)
    for path in originals:  # the same photos as WebP (lossy, quality 85): no large WebP photos are shared
        target = webp_dir / f"{path.stem}.webp"
        if not target.exists():
            with Image.open(path) as img:
                img.convert("RGB").save(target, quality=85, method=4)
    sources = {"jpeg": [p for p in originals if p.suffix.lower() in FORMATS["jpeg"]],
               "png": [p for p in originals if p.suffix.lower() == ".png"], "webp": sorted(webp_dir.iterdir())}
    sources["mixed"] = [p for group in zip(sources["jpeg"], sources["png"], sources["webp"]) for p in group]
    folders = {}
    for name, files in sources.items():
        folder = into / name
        if not folder.is_dir() or sum(1 for _ in folder.iterdir()) != per_format:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for n in range(per_format):
                original = files[n % len(files)]
                _link(original, folder / f"{n:05d}_{original.name}")
        folders[name] = folder
    return folders


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copy(src, dest)


def _bare_decode(paths: list[str], min_side: int) -> int:
    """The fastest plain decoder per format, to RGB: read once; JPEG: Pillow draft; PNG/WebP: libvips shrink-on-load."""
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    for path in paths:
        with open(path, "rb") as fp:
            data = fp.read()
        if path.endswith((".png", ".webp")):
            image = pyvips.Image.new_from_buffer(data, "", access="sequential")
            factor = max(1, min(image.width, image.height) // min_side)
            if path.endswith(".webp"):
                image = pyvips.Image.webpload_buffer(data, access="sequential", scale=1 / factor)
            elif factor > 1:
                image = image.shrink(factor, factor)
            if image.bands == 4:  # RGB out, as the Pillow branch's convert (and `index`)
                image = image.flatten(background=[255, 255, 255])
            image.numpy()
        else:
            with Image.open(path) as img:
                img.draft("RGB", (min_side, min_side))
                img.convert("RGB")
    return len(paths)


def bare_rate(folder: Path, workers: int, min_side: int) -> float:
    """Images/s of the bare loop over ``folder`` in a spawned pool (start-up included, as in `index`)."""
    from bench_index import bare_decode_rate

    return bare_decode_rate(sorted(str(p) for p in folder.iterdir()), workers, min_side, decode=_bare_decode)


def write_config(work: Path, root: Path, workers: int, threads: int, decoder: str, size: int | None) -> Path:
    """A config indexing ``root``: the default embedder at ``size`` px, or no embedder (``size`` None)."""
    model = {"input_size": size} if size else {"arch": "resnet18", "init": "random"}  # random, no file: no embeddings
    path = work / f"config-{decoder}-{size}.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"image_root": str(root)}, "output": {"dir": str(work / "out")},
        "runtime": {"device": "cpu", "threads": threads}, "model": model,
        "index": {"workers": workers, "decoder": decoder},
    }))
    return path


def index_rate(config_path: Path) -> float:
    """Images/s of a fresh `index` (the ONNX graph cache is kept between runs, as after a first run)."""
    from imagerec.indexing.run import index_collection

    config = load_config(config_path)
    config.output.layout.db.unlink(missing_ok=True)
    config.output.dir.mkdir(parents=True, exist_ok=True)
    summary = index_collection(config)
    return summary.processed / summary.elapsed_s


def model_rate(config_path: Path, folder: Path, size: int, batch_size: int = 64) -> float:
    """Images/s of the default embedder alone on pre-decoded inputs (as `index` loads it)."""
    from bench_index import embed_rate, predecoded

    from imagerec.indexing.run import load_index_embedder

    embedder = load_index_embedder(load_config(config_path))
    files = sorted(folder.iterdir())[:2 * batch_size]
    return embed_rate(embedder.embed, predecoded(files, size), batch_size)


def best_of(repeat: int, fn, *args) -> float:
    return max(fn(*args) for _ in range(repeat))


def measure_format(name: str, folder: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    """Rows for one folder: plain index (pillow / auto) vs the bare loop, then per size the embedded index vs its bound."""
    w, t, r = args.workers, args.threads, args.repeat
    rows = []
    bare = best_of(r, bare_rate, folder, w, decode_min_side(None))
    plain = {d: best_of(r, index_rate, write_config(work, folder, w, t, d, None)) for d in ("pillow", "auto")}
    rows.append({"format": name, "size": "-", "bare": bare, "pillow": plain["pillow"], "auto": plain["auto"],
                 "bound": bare})
    for size in args.sizes:
        decode = best_of(r, bare_rate, folder, w, decode_min_side(size))
        model = model_rate(write_config(work, folder, w, t, "auto", size), folder, size)
        bound = 1 / (1 / decode + 1 / model)
        emb = {d: best_of(r, index_rate, write_config(work, folder, w, t, d, size)) for d in ("pillow", "auto")}
        rows.append({"format": name, "size": size, "bare": decode, "model": model, "pillow": emb["pillow"],
                     "auto": emb["auto"], "bound": bound})
        _log(f"{name} {size}: {rows[-1]}")
    return rows


def worker_peak_rss(path: Path, decoder: str, min_side: int) -> float:
    """Peak RSS (MiB) of a fresh process that imports the decoder and loads ``path`` once, minus the same process without the load."""
    code = ("import sys; from imagerec.data import loading; from imagerec.data.features import color_histogram, "
            "HistogramSpec; from imagerec.embed.base import Preprocess; "
            f"s = loading.LoadSettings(('PNG', 'JPEG', 'WEBP'), 178956970, {min_side}, True, '{decoder}'); "
            "img = loading.load_image(sys.argv[1], s).image if sys.argv[1] else None; "
            f"img and (color_histogram(img, HistogramSpec()), Preprocess({min_side})(img)); "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")  # kB; reset at exec
    peaks = [int(subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True).stdout)
             for arg in (str(path), "")]
    return peaks[0] / 1024, peaks[1] / 1024


def make_24mp_png(into: Path) -> Path:
    """A 6000x4000 RGBA photo PNG (the largest shared JPEG, upscaled, with an alpha channel)."""
    target = into / "photo_24mp.png"
    if not target.exists():
        with Image.open(max(DEFAULT_SOURCE.glob("*.jpg"), key=lambda p: p.stat().st_size)) as img:
            img.convert("RGB").resize((6000, 4000), Image.Resampling.BILINEAR).convert("RGBA").save(target, compress_level=6)
    return target


def core_split(folder: Path, work: Path, args: argparse.Namespace) -> list[tuple[int, int, bool, float]]:
    """Index rate with the default embedder (224 px) per (workers, model threads, decoders at SCHED_IDLE)."""
    from imagerec.indexing.executors import LocalExecutor
    from imagerec.indexing.run import index_collection

    rows = []
    for workers, threads, idle in args.splits:
        config = load_config(write_config(work, folder, workers, threads, "auto", 224))
        config.output.layout.db.unlink(missing_ok=True)
        config.output.dir.mkdir(parents=True, exist_ok=True)
        executor = LocalExecutor(workers, max_in_flight=max(2 * workers, 4), yield_cpu=idle)
        summary = index_collection(config, executor=executor)
        rows.append((workers, threads, idle, summary.processed / summary.elapsed_s))
        _log(f"split {rows[-1]}")
    return rows


def exif_thumbnail_check(files: list[Path]) -> tuple[int, float, float, int, int, float]:
    """For camera JPEGs carrying a same-aspect EXIF thumbnail: (count, ms/file for the main image at draft size +
    features, ms/file for the thumbnail + features, files within 4 dHash bits, worst dHash distance, worst histogram L1)."""
    from io import BytesIO

    from imagerec.data import loading
    from imagerec.data.features import HistogramSpec, color_histogram, dhash

    settings = loading.LoadSettings(("JPEG",), 178_956_970, decode_min_side(None))
    spec, pairs, main_s, thumb_s = HistogramSpec(), [], 0.0, 0.0
    for path in files:
        with Image.open(path) as img:
            exif = img.getexif().get_ifd(ExifTags.IFD.IFD1)  # the thumbnail's directory
            raw = img.info.get("exif", b"")
        start, length = exif.get(0x0201), exif.get(0x0202)
        if not start or not length or img.width * img.height < 1_000_000:
            continue
        t0 = time.perf_counter()
        main = loading.load_image(path, settings).image
        main_features = color_histogram(main, spec), dhash(main)
        t1 = time.perf_counter()
        with Image.open(BytesIO(raw[6 + start: 6 + start + length])) as thumb:
            thumb = thumb.convert("RGB")
            thumb_features = color_histogram(thumb, spec), dhash(thumb)
        thumb_s, main_s = thumb_s + time.perf_counter() - t1, main_s + t1 - t0
        if abs(thumb.width / thumb.height - main.width / main.height) < 0.02:  # letterboxed thumbnails do not count
            pairs.append((bin(main_features[1] ^ thumb_features[1]).count("1"),
                          float(np.abs(main_features[0] - thumb_features[0]).sum())))
    n = max(1, len(pairs))
    return (len(pairs), 1000 * main_s / n, 1000 * thumb_s / n, sum(p[0] <= 4 for p in pairs),
            max((p[0] for p in pairs), default=0), max((p[1] for p in pairs), default=0.0))


def report(rows: list[dict], splits, rss, thumbs, args, load: str) -> str:
    lines = [f"## photo-size index benchmark ({args.per_format} files per format from {args.source.name}, "
             f"{args.workers} workers, {args.threads} model threads, best of {args.repeat}; load before: {load})", "",
             "| format | model px | bare decode img/s | model alone img/s | bound img/s | index today (pillow) | "
             "index (auto) | auto / bound | auto / today | 550k h today | 550k h auto |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        model = f"{row['model']:.1f}" if "model" in row else "-"
        lines.append(f"| {row['format']} | {row['size']} | {row['bare']:.1f} | {model} | {row['bound']:.1f} | "
                     f"{row['pillow']:.1f} | {row['auto']:.1f} | {row['auto'] / row['bound']:.2f} | "
                     f"{row['auto'] / row['pillow']:.2f} | {PROJECTED / row['pillow'] / 3600:.1f} | "
                     f"{PROJECTED / row['auto'] / 3600:.1f} |")
    lines += ["", "Model px '-': no embeddings; its bound is the bare decode loop (target >= 0.90). With embeddings the "
              "bound is 1 / (1/decode + 1/model): decode and model share the same cores (target >= 0.85)."]
    if splits:
        lines += ["", "| decode workers | model threads | decoders SCHED_IDLE | index img/s (mixed, 224 px) |", "|---|---|---|---|",
                  *[f"| {w} | {t} | {'yes' if idle else 'no'} | {rate:.1f} |" for w, t, idle, rate in splits]]
    if rss:
        lines += ["", "| one worker, 24-MP RGBA PNG (6000x4000) | peak RSS MiB | of which the decode |", "|---|---|---|",
                  *[f"| decoder {d} | {peak:.0f} | {peak - base:.0f} |" for d, (peak, base) in rss.items()]]
    if thumbs:
        n, main_ms, thumb_ms, close, ham, l1 = thumbs
        lines += ["", f"EXIF thumbnail ({n} camera JPEGs >= 1 MP with a same-aspect thumbnail): main image at draft size + "
                  f"hash + histogram {main_ms:.1f} ms/file, thumbnail {thumb_ms:.1f} ms/file; dHash within 4 bits for {close}, "
                  f"worst dHash distance {ham}/64, "
                  f"worst histogram L1 {l1:.3f}."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--per-format", type=int, default=100, help="files per format folder")
    parser.add_argument("--formats", default="jpeg,png,webp,mixed")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="model threads (runtime.threads)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=[160, 192, 224])
    parser.add_argument("--repeat", type=int, default=2, help="best of N for each rate")
    parser.add_argument("--splits", type=lambda s: [(int(w), int(t), i == "idle") for w, t, i in
                                                    (x.split(":") for x in s.split(",") if x)],
                        default=[], help="core-split runs on the mixed folder, e.g. 2:2:idle,2:2:normal,1:2:idle")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the replicated folders (bench/out/photos)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """(figures, markdown report). The folders are built under bench/out/photos and removed unless ``--keep``."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    folders = build_folders(args.source, args.per_format, OUT)
    rows, splits, rss = [], [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="imagerec-photos-") as tmp:
            for name in args.formats.split(","):
                rows += measure_format(name, folders[name], Path(tmp), args)
            splits = core_split(folders["mixed"], Path(tmp), args) if args.splits else []
        if not args.no_rss:
            big = make_24mp_png(OUT)
            rss = {d: worker_peak_rss(big, d, 224) for d in ("pillow", "auto")}
        thumbs = exif_thumbnail_check(sorted((SHARED / "camera-samples" / "jpg").rglob("*.jp*g")))
    finally:
        if not args.keep:
            shutil.rmtree(OUT, ignore_errors=True)
    plain = [r for r in rows if r["size"] == "-"]
    mix = next((r for r in plain if r["format"] == "mixed"), plain[0] if plain else None)  # run_all's summary row
    figures = {"photo_index_plain": mix["auto"], "photo_bare": mix["bare"]} if mix else {}
    return figures, report(rows, splits, rss, thumbs, args, load)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    from bench_index import report_main

    report_main(parse_args, run)
