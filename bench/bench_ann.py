"""ANN + query benchmark: build-ann time/memory, recall@10, query latency vs exact brute-force fusion.

Vectors: the real embeddings of ../shared/data/caltech101 (9,144 photos, random-init ResNet-18 at
96 px, from an ``index`` run; made on first use under bench/out/caltech101) plus synthetic rows drawn
near them (real vector + Gaussian noise, renormalised; histogram and dHash copied from the same real
image with a few hash bits flipped). Everything goes through the real code: Store.write_batch,
``imagerec build-ann`` (in a subprocess, for its peak RSS), Recommender.query.

    .venv/bin/python bench/bench_ann.py --n 20000            # quick check (~2 min on 2 cores)
    .venv/bin/python bench/bench_ann.py --n 550000           # the target size (see docs/benchmarks.md)
    .venv/bin/python bench/bench_ann.py --n 100000 --compare # + hnswlib vs FAISS on the same vectors

Prints a markdown report.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGEREC_SHARED_DATA", REPO.parent / "shared" / "data"))
CALTECH = SHARED / "caltech101" / "101_ObjectCategories"
OUT = REPO / "bench" / "out"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def source_collection(db: Path | None) -> Path:
    """An indexed Caltech-101 output folder (images.db + embedding_model.pt); indexed here when missing."""
    if db is not None:
        return db.parent
    out = OUT / "caltech101"
    if (out / "images.db").exists() and (out / "embedding_model.pt").exists():
        return out
    from imagerec.embed.files import ModelSpec, write_random_model

    out.mkdir(parents=True, exist_ok=True)
    write_random_model(out / "embedding_model.pt", ModelSpec(image_size=96), seed=0)
    cfg = out / "config.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"image_root": str(CALTECH)}, "output": {"dir": str(out)}}))
    log(f"indexing {CALTECH} with a random-init 96 px model (one-off, ~5 min on 2 cores)")
    subprocess.run([sys.executable, "-m", "imagerec", "--config", str(cfg), "index", "-q"], check=True)
    return out


def make_store(src: Path, n: int, dest: Path, noise: float, seed: int) -> tuple[Path, int]:
    """Write an N-row store: the real rows, then noisy copies. Returns (config path, real row count)."""
    from imagerec.store import ImageRecord, Store

    cfg = dest / "config.yaml"
    if (dest / "images.db").exists() and cfg.exists():
        with Store(dest / "images.db", readonly=True) as store:
            if store.count_images() == n:
                log(f"reusing {dest / 'images.db'} ({n} rows)")
                return cfg, int(store.get_meta("bench_real_rows") or 0)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if (src / "embedding_model.pt").exists():  # a trained model; without one the store holds the pretrained default's
        shutil.copy(src / "embedding_model.pt", dest / "embedding_model.pt")
    (dest / "images").mkdir()
    with Store(src / "images.db", readonly=True) as s:
        model_id, model_init = s.model_id, s.get_meta("model_init")
        real = [rows for rows in s.iter_features(model_id)]
    ids = np.concatenate([r.ids for r in real])
    emb = np.concatenate([r.embeddings for r in real])
    hist = np.concatenate([r.histograms for r in real])
    hashes = np.concatenate([r.dhashes for r in real])
    paths = [p for r in real for p in r.paths]
    hist_key = "rgb8x8x8-side128"
    rng = np.random.default_rng(seed)
    sigma = noise * float((emb / np.linalg.norm(emb, axis=1, keepdims=True)).std(axis=0).mean())
    log(f"synthetic noise σ = {sigma:.5f} per dimension ({noise} × the real per-dimension std)")
    t0 = time.perf_counter()
    with Store(dest / "images.db") as store:
        store.set_model_id(model_id, model_init)
        store.set_meta("bench_real_rows", str(min(n, len(ids))))
        for start in range(0, n, 5000):
            count = min(5000, n - start)
            j = (np.arange(start, start + count)) % len(ids)
            vec = emb[j].copy()
            synthetic = np.arange(start, start + count) >= len(ids)
            if synthetic.any():
                vec[synthetic] += rng.normal(scale=sigma, size=(int(synthetic.sum()), emb.shape[1])).astype(np.float32)
                vec /= np.linalg.norm(vec, axis=1, keepdims=True)
            flips = rng.integers(0, 64, size=count)
            hs = hashes[j].view(np.uint64) ^ np.where(synthetic, np.left_shift(np.uint64(1), flips.astype(np.uint64)), np.uint64(0))
            records = [
                ImageRecord((paths[jj] if not syn else b"syn/%07d/" % (start + i) + paths[jj]), 1, 1, 96, 96, "JPEG",
                            hist[jj], hist_key, int(h.view(np.int64)), v, model_id)
                for i, (jj, syn, v, h) in enumerate(zip(j, synthetic, vec, hs))
            ]
            store.write_batch(records)
            if (start // 5000) % 20 == 0:
                log(f"  wrote {start + count}/{n} rows")
    log(f"store with {n} rows written in {time.perf_counter() - t0:.1f} s")
    write_config(cfg, dest, {})
    return cfg, min(n, len(ids))


def write_config(cfg: Path, dest: Path, hnsw: dict[str, int]) -> None:
    """The benchmark collection's config: 2 threads, ``ann.kind: hnsw`` with the given parameters (else the defaults)."""
    cfg.write_text(yaml.safe_dump({"data": {"image_root": str(dest / "images")}, "output": {"dir": str(dest)},
                                   "runtime": {"threads": 2}, "ann": {"threads": 2, "kind": "hnsw", "hnsw": hnsw}}))


def build(cfg: Path) -> tuple[float, float]:
    """``imagerec build-ann`` in a child process: (wall seconds, peak RSS MiB of the child)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imagerec", "--config", str(cfg), "build-ann"], check=True)
    wall = time.perf_counter() - t0
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="Rows in the benchmark store (default 20000; target 550000).")
    ap.add_argument("--db", type=Path, help="An existing images.db of an indexed collection (model file beside it).")
    ap.add_argument("--queries", type=int, default=200, help="Query ids for recall and latency.")
    ap.add_argument("--brute-queries", type=int, default=10, help="Queries for the exact brute-force fusion baseline.")
    ap.add_argument("--external", type=int, default=30, help="External image queries (decode+embed+search+re-rank).")
    ap.add_argument("--noise", type=float, default=1.0,
                    help="Noise of synthetic rows per dimension, in units of the real embeddings' per-dimension std "
                         "(1.0: a synthetic row is about as close to its source as a real image's nearest neighbour).")
    ap.add_argument("--M", type=int, help="ann.hnsw.M for this run (default: the config default).")
    ap.add_argument("--ef-construction", type=int, help="ann.hnsw.ef_construction for this run (default: the config default).")
    ap.add_argument("--ef-search", type=int, help="ann.hnsw.ef_search for this run (default: chosen from N).")
    ap.add_argument("--ef-sweep", default="64,128,256,512,1024",
                    help="ef_search values at which recall@10 is also reported (comma-separated; '' for none).")
    ap.add_argument("--reuse-index", action="store_true", help="Measure the ANN index already built for this store.")
    ap.add_argument("--compare", action="store_true", help="Also compare hnswlib 0.8.0 and FAISS IndexHNSWFlat on the same vectors.")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    _, text = run(source_collection(args.db), OUT / f"ann_{args.n}_noise{args.noise:g}", args)
    print(text)


def run(src: Path, dest: Path, args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """Store of ``args.n`` rows from ``src`` at ``dest``, build-ann, recall and latency: (figures, markdown)."""
    from imagerec.ann import read_manifest
    from imagerec.config import load_config
    from imagerec.search.fusion import score_candidates
    from imagerec.search.recommender import Recommender
    from imagerec.store import Store

    cfg_path, real_rows = make_store(src, args.n, dest, args.noise, args.seed)
    hnsw = {k: v for k, v in (("M", args.M), ("ef_construction", args.ef_construction), ("ef_search", args.ef_search))
            if v is not None}
    write_config(cfg_path, dest, hnsw)
    config = load_config(cfg_path)
    if args.reuse_index:
        build_s = build_rss = float("nan")
        log("reusing the ANN index already built")
    else:
        log("building the ANN index (imagerec build-ann)")
        build_s, build_rss = build(cfg_path)
    size_mb = read_manifest(config.output.layout).size_bytes / 1e6
    rng = np.random.default_rng(args.seed + 1)

    with Store(config.output.layout.db, readonly=True) as store:
        model_id = store.get_meta("model_id")
        all_rows = list(store.iter_features(model_id, chunk_size=50_000))
    ids = np.concatenate([r.ids for r in all_rows])
    query_ids = np.sort(rng.choice(ids, size=min(args.queries, len(ids)), replace=False))

    log("recall@10 of the ANN index against exact brute force")
    t0 = time.perf_counter()
    rec = Recommender(config)
    load_s = time.perf_counter() - t0
    qv = np.concatenate([r.embeddings[np.isin(r.ids, query_ids)] for r in all_rows])
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    sims = np.concatenate([qv @ (r.embeddings / np.linalg.norm(r.embeddings, axis=1, keepdims=True)).T for r in all_rows], axis=1)
    truth = ids[np.argsort(-sims, axis=1)[:, :10]]
    del sims
    def recall_at(ef_search: int | None) -> tuple[float, float]:
        """(recall@10, p50 ms of one single-query ANN search) at ``ef_search``."""
        found, took = [], []
        for row in qv:
            t0 = time.perf_counter()
            found.append(rec.ann.search(row[None], 10, ef_search=ef_search)[1][0])
            took.append(time.perf_counter() - t0)
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])), pct(took, 50)

    recall, _ = recall_at(None)
    default_ef = rec.ann.ef_search
    sweep = {ef: recall_at(ef) for ef in (int(v) for v in args.ef_sweep.split(",") if v.strip())}
    log(f"recall@10 {recall:.4f} at the default ef_search; sweep {sweep}")

    log("query --id latency (candidates + re-rank, features from SQLite)")
    weights = rec.weights
    lat, ann_s, fetch_s, rerank_s, top_ann = [], [], [], [], {}
    for qid in query_ids:
        t0 = time.perf_counter()
        response = rec.query([rec.image_by_id(int(qid))], top_k=10, weights=weights)
        lat.append(time.perf_counter() - t0)
        ann_s.append(response.timings["ann_search"])
        fetch_s.append(response.timings["fetch"])
        rerank_s.append(response.timings["rerank"])
        top_ann[int(qid)] = [r.id for r in response.results]

    log("exact brute-force fusion over all rows (features already in memory)")
    brute, fused_recall = [], []
    for qid in query_ids[: args.brute_queries]:
        q = rec.image_by_id(int(qid))
        t0 = time.perf_counter()
        best_s, best_i = [], []
        for r in all_rows:
            s = score_candidates([q], r, config.query.color_measure).fused(weights)
            s[r.ids == qid] = -np.inf
            best_s.append(s)
            best_i.append(r.ids)
        s, i = np.concatenate(best_s), np.concatenate(best_i)
        top = i[np.lexsort((i, -s))[:10]]
        brute.append(time.perf_counter() - t0)
        fused_recall.append(len(set(top.tolist()) & set(top_ann[int(qid)])) / 10)

    log("external query --image latency (decode + embed + search + re-rank, model loaded)")
    files = sorted(p for p in CALTECH.rglob("*.jpg"))
    picks = [files[i] for i in rng.choice(len(files), size=min(args.external, len(files)), replace=False)]
    rec.embedder  # load the model outside the timing  # noqa: B018
    rec.search(images=[picks[0]], top_k=10)  # warm-up
    ext, ext_parts = [], {"decode": [], "features": [], "embed": []}
    for path in picks:
        t0 = time.perf_counter()
        response = rec.search(images=[path], top_k=10, weights=weights)
        ext.append(time.perf_counter() - t0)
        for k in ext_parts:
            ext_parts[k].append(response.timings.get(k, 0.0))
    rec.close()

    p50, p95, b50 = pct(lat, 50), pct(lat, 95), pct(brute, 50)
    out = []
    out.append(f"\n## ANN + query benchmark, N = {args.n:,} (dim {qv.shape[1]}; {real_rows:,} real Caltech-101 embeddings + "
          f"{args.n - real_rows:,} synthetic near them, noise {args.noise}× per-dim std)\n")
    out.append(f"FAISS IndexHNSWFlat M={config.ann.hnsw.M}, ef_construction={config.ann.hnsw.ef_construction}, "
          f"ef_search={default_ef}; candidates = max({config.query.candidates}, {config.query.candidates_per_k}·k); "
          f"{os.cpu_count()} CPU cores\n")
    out.append("| metric | value | target |\n|---|---|---|")
    out.append(f"| build-ann wall time | {build_s:.1f} s | |")
    out.append(f"| build-ann peak RSS (child process) | {build_rss:.0f} MiB | |")
    out.append(f"| index file | {size_mb:.0f} MB | |")
    out.append(f"| index load (checks + read) | {load_s * 1000:.0f} ms | |")
    out.append(f"| recall@10 vs exact, ef_search={default_ef}, {len(query_ids)} queries | {recall:.4f} | ≥ 0.99 |")
    for ef, (value, ms) in sweep.items():
        out.append(f"|   recall@10 at ef_search={ef} (one-query ANN search p50 {ms:.2f} ms) | {value:.4f} | |")
    out.append(f"| query --id p50 / p95 (k=10) | {p50:.2f} / {p95:.2f} ms | p50 ≤ 10 ms |")
    out.append(f"|   of which ANN search / SQLite fetch / re-rank (p50) | {pct(ann_s, 50):.2f} / {pct(fetch_s, 50):.2f} / {pct(rerank_s, 50):.2f} ms | |")
    out.append(f"| exact brute-force fusion of all rows, p50 ({len(brute)} queries) | {b50:.1f} ms | |")
    out.append(f"| speed-up vs brute force (p50) | {b50 / p50:.0f}× | ≥ 10× |")
    out.append(f"| fused top-10 overlap with brute force | {np.mean(fused_recall):.3f} | |")
    out.append(f"| external query --image p50 / p95 ({len(ext)} Caltech photos) | {pct(ext, 50):.1f} / {pct(ext, 95):.1f} ms | p50 ≤ 60 ms |")
    out.append(f"|   of which decode / features / embed (p50) | {pct(ext_parts['decode'], 50):.1f} / "
          f"{pct(ext_parts['features'], 50):.1f} / {pct(ext_parts['embed'], 50):.1f} ms | |")

    if args.compare:
        vectors = np.concatenate([r.embeddings for r in all_rows])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        compare_libraries(vectors, qv, ids, truth, config.ann.hnsw.M, config.ann.hnsw.ef_construction)

    figures = {"recall@10": recall, "recall_sweep": sweep, "query_p50_ms": p50, "brute_p50_ms": b50, "speedup": b50 / p50,
               "external_p50_ms": pct(ext, 50), "build_s": build_s, "build_rss_mib": build_rss, "index_mb": size_mb,
               "fused_overlap": float(np.mean(fused_recall))}
    return figures, "\n".join(out)

def compare_libraries(vectors, queries, ids, truth, m: int, efc: int) -> None:
    """hnswlib vs FAISS HNSW on the same unit vectors: build (2 threads), latency (1 thread), recall@10."""
    import faiss
    import hnswlib

    def rss_mib() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    print(f"\n### hnswlib vs FAISS, N = {len(vectors):,}, M={m}, ef_construction={efc}, build 2 threads, query 1 thread\n")
    print("| library | build s | index RSS MiB | ef=64 p50 µs / recall@10 | ef=128 | ef=256 | ef=512 |\n|---|---|---|---|---|---|---|")
    for name in ("hnswlib 0.8.0 (ip)", f"FAISS {faiss.__version__} IndexHNSWFlat (inner product)",
                 f"FAISS {faiss.__version__} IndexHNSWFlat (L2 on unit vectors)"):
        before = rss_mib()
        t0 = time.perf_counter()
        if name.startswith("hnswlib"):
            index = hnswlib.Index(space="ip", dim=vectors.shape[1])
            index.init_index(max_elements=len(vectors), M=m, ef_construction=efc)
            index.set_num_threads(2)
            for start in range(0, len(vectors), 10_000):  # chunked like build-ann
                index.add_items(vectors[start : start + 10_000], ids[start : start + 10_000])
            index.set_num_threads(1)
        else:
            faiss.omp_set_num_threads(2)
            metric = faiss.METRIC_L2 if "L2" in name else faiss.METRIC_INNER_PRODUCT
            inner = faiss.IndexHNSWFlat(vectors.shape[1], m, metric)
            inner.hnsw.efConstruction = efc
            index = faiss.IndexIDMap(inner)
            for start in range(0, len(vectors), 10_000):  # chunked like build-ann: one huge add() loses recall
                index.add_with_ids(vectors[start : start + 10_000], ids[start : start + 10_000])
            faiss.omp_set_num_threads(1)
        build_s = time.perf_counter() - t0
        mem = rss_mib() - before
        cells = []
        for ef in (64, 128, 256, 512):
            lat, found = [], []
            for q in queries:
                t0 = time.perf_counter()
                if name.startswith("hnswlib"):
                    index.set_ef(ef)
                    labels, _ = index.knn_query(q[None], k=10)
                else:
                    inner.hnsw.efSearch = ef
                    _, labels = index.search(q[None], 10)
                lat.append(time.perf_counter() - t0)
                found.append(labels[0])
            recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)])
            cells.append(f"{np.median(lat) * 1e6:.0f} / {recall:.4f}")
        print(f"| {name} | {build_s:.1f} | {mem:.0f} | " + " | ".join(cells) + " |")
        del index


if __name__ == "__main__":
    main()
