"""``imagerec serve`` benchmark: start-up time, /similar and upload-search latency, thumbnail miss vs hit.

The store is bench_ann.py's (real Caltech-101 rows + synthetic rows near them, the same generator and
folder, built on first use), served by a real ``imagerec serve`` process and measured over HTTP
(httpx, one request at a time). Thumbnails and uploads use the real Caltech-101 photos, so the
served image root is ../shared/data/caltech101 (synthetic rows have no file and are never shown).

    .venv/bin/python bench/bench_serve.py --n 20000     # quick (~3 min on 2 cores once the source is indexed)
    .venv/bin/python bench/bench_serve.py --n 550000    # the target size (store + build-ann: tens of minutes)

Prints a markdown report.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ann  # noqa: E402  - same store generator and folders
from bench_ann import CALTECH, OUT, log, pct  # noqa: E402


def prepare(n: int) -> tuple[Path, int]:
    """(serve config, real rows): bench_ann's N-row store with its ANN index, image root = Caltech-101."""
    src = bench_ann.source_collection(None)
    cfg, real_rows = bench_ann.make_store(src, n, OUT / f"serve_{n}", 1.0, 0)
    if not (cfg.parent / "ann.json").exists():
        log("building the ANN index (imagerec build-ann)")
        bench_ann.build(cfg)
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["image_root"] = str(CALTECH)
    serve_cfg = cfg.parent / "serve.yaml"
    serve_cfg.write_text(yaml.safe_dump(raw))
    shutil.rmtree(cfg.parent / "cache" / "thumbs", ignore_errors=True)  # every first thumbnail is a miss
    return serve_cfg, real_rows


def start(cfg: Path):
    """(process, base URL, seconds to the printed URL, seconds to the first /api/status answer)."""
    import httpx

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(cfg), "serve", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    url = re.search(r"at (http://\S+/)", proc.stdout.readline()).group(1)
    printed = time.perf_counter() - t0
    while True:
        try:
            if httpx.get(url + "api/status", timeout=60).status_code == 200:
                return proc, url, printed, time.perf_counter() - t0
        except httpx.TransportError:
            time.sleep(0.02)


def timed(client, method: str, url: str, **kwargs) -> float:
    t0 = time.perf_counter()
    response = client.request(method, url, **kwargs)
    elapsed = time.perf_counter() - t0
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return elapsed


def measure(client, real_rows: int, args) -> dict[str, list[float]]:
    """Seconds per request of each kind."""
    rng = np.random.default_rng(args.seed)
    ids = rng.choice(np.arange(1, real_rows + 1), size=args.queries + args.thumbs, replace=False)
    t: dict[str, list[float]] = {"first_similar": [timed(client, "GET", f"/api/images/{ids[0]}/similar")]}
    t["similar"] = [timed(client, "GET", f"/api/images/{i}/similar", params={"k": 20}) for i in ids[1:args.queries]]
    t["rerank"] = [timed(client, "GET", f"/api/images/{i}/similar", params={"k": 20, "w_color": 0.8})
                   for i in ids[1:args.queries]]
    photos = sorted(CALTECH.glob("*/*.jpg"))
    picks = [photos[j] for j in rng.choice(len(photos), size=args.uploads, replace=False)]
    t["upload"] = [timed(client, "POST", "/api/search", params={"k": 20},
                         files=[("images", (p.name, p.read_bytes(), "image/jpeg"))]) for p in picks]
    thumb_ids = ids[args.queries:]
    t["thumb_miss"] = [timed(client, "GET", f"/api/images/{i}/thumbnail", params={"size": 256}) for i in thumb_ids]
    t["thumb_hit"] = [timed(client, "GET", f"/api/images/{i}/thumbnail", params={"size": 256}) for i in thumb_ids]
    t["page"] = [timed(client, "GET", "/api/images", params={"offset": int(o), "limit": 60})
                 for o in rng.integers(0, args.n - 60, size=20)]
    return t


def report(n: int, printed: float, ready: float, t: dict[str, list[float]]) -> str:
    rows = [("start-up: URL printed", [printed]), ("start-up: first /api/status answered", [ready]),
            ("first /similar (opens the ANN index)", t["first_similar"]),
            ("GET /api/images/{id}/similar, k=20", t["similar"]), ("same, other weights (re-rank)", t["rerank"]),
            ("POST /api/search, one JPEG upload, k=20", t["upload"]),
            ("thumbnail 256 px, cache miss", t["thumb_miss"]), ("thumbnail 256 px, cache hit", t["thumb_hit"]),
            ("GET /api/images page of 60 at random offsets", t["page"])]
    lines = [f"serve benchmark, {n:,} rows", "", "| request | n | p50 ms | p95 ms |", "|---|---|---|---|"]
    lines += [f"| {name} | {len(v)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} |" for name, v in rows]
    return "\n".join(lines)


def main() -> None:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="Rows in the benchmark store (target 550000).")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--uploads", type=int, default=30)
    ap.add_argument("--thumbs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg, real_rows = prepare(args.n)
    log(f"starting imagerec serve on {cfg}")
    proc, url, printed, ready = start(cfg)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            t = measure(client, real_rows, args)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(report(args.n, printed, ready, t))


if __name__ == "__main__":
    main()
