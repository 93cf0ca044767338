"""IVF-PQ (``ann.kind: ivfpq``) at 550k and 5M vectors: build time, bytes per vector, recall, latency.

Vectors (dim 512, clustered like real embeddings): the 9,144 Caltech-101 embeddings of the default embedder
(``bench/out/caltech101_default``, made by ``bench_duplicates.py``) projected on their top 512 principal
axes, then synthetic rows = a real row + Gaussian noise (cosine ≈ 0.85 to it), unit length, generated in
chunks straight into a float32 memory-mapped file (``bench/out/ivfpq_<n>.f32``), so memory stays bounded.
The index is built by the same backend class ``build-ann`` uses (``IvfPqBackend``: train on a sample, add
in chunks, write atomically, load — read or memory-mapped). Reported: build time, file bytes per vector,
resident bytes per vector (RSS growth of loading, in a child process), recall@10 of the candidates
(top 10 by PQ score) and of the final top-10 after re-ranking the top ``--candidates`` exactly with the
float vectors (what ``query`` does with the stored embeddings), query p50/p95 (one query at a time,
1 thread, candidates + re-rank), against exact brute-force search.

    .venv/bin/python bench/bench_ivfpq.py --n 550000 5000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ann import OUT, log  # noqa: E402

DIM = 512
CHUNK = 100_000


def base_vectors() -> np.ndarray:
    """The real embeddings on their top-512 principal axes, unit length."""
    from bench_duplicates import default_collection
    from imagerec.store import Store

    with Store(default_collection() / "images.db", readonly=True) as store:
        emb = np.concatenate([v for _, v in store.iter_embeddings(store.model_id)])
    centred = emb - emb.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[::2], full_matrices=False)
    proj = centred @ vt[:DIM].T
    return (proj / np.linalg.norm(proj, axis=1, keepdims=True)).astype(np.float32)


def vectors_file(n: int, seed: int = 0) -> np.memmap:
    path = OUT / f"ivfpq_{n}.f32"
    if path.exists() and path.stat().st_size == n * DIM * 4:
        return np.memmap(path, dtype=np.float32, mode="r", shape=(n, DIM))
    base = base_vectors()
    rng = np.random.default_rng(seed)
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, DIM))
    sigma = 0.62 / np.sqrt(DIM)  # noise norm 0.62: cosine ≈ 0.85 to the source row
    for start in range(0, n, CHUNK):
        rows = base[rng.integers(0, len(base), size=min(CHUNK, n - start))]
        rows = rows + rng.normal(scale=sigma, size=rows.shape).astype(np.float32)
        out[start:start + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()
    log(f"wrote {n:,} vectors to {path}")
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, DIM))


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(vectors), CHUNK):
        sims = queries @ np.asarray(vectors[start:start + CHUNK]).T
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.arange(start, start + sims.shape[1])[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def build(vectors: np.ndarray, dest: Path) -> tuple[Path, dict, float]:
    from imagerec.ann.base import AnnSettings
    from imagerec.ann.ivfpq import IvfPqBackend

    n = len(vectors)
    backend = IvfPqBackend(AnnSettings(kind="ivfpq", threads=2))
    t0 = time.perf_counter()
    size = backend.training_size(n)
    step = max(1, n // size)
    backend.train(np.ascontiguousarray(vectors[::step][:size]), n)
    train_s = time.perf_counter() - t0
    for start in range(0, n, CHUNK):
        backend.add(np.arange(start, min(n, start + CHUNK)), np.asarray(vectors[start:start + CHUNK]))
    (path,) = backend.write(dest)
    total = time.perf_counter() - t0
    log(f"built {path.name}: {backend.build_params()} in {total:.0f} s (train {train_s:.0f} s)")
    return path, backend.build_params(), total


RESIDENT = """
import json, resource, sys, numpy as np
from imagerec.ann.base import AnnSettings
from imagerec.ann.ivfpq import IvfPqBackend
from imagerec.ann.manifest import AnnMetadata
path, n, dim, mmap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
def rss():  # private (anonymous) resident bytes: mapped file pages are the OS's cache, evictable
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["RssAnon"].split()[0]) * 1024
before = rss()
class Meta:  # the fields load() reads
    params = {"mmap": mmap}; dim = 0; count = 0
Meta.dim, Meta.count = dim, n
index = IvfPqBackend(AnnSettings(kind="ivfpq", params={"mmap": mmap})).load([__import__("pathlib").Path(path)], Meta)
q = np.random.default_rng(0).normal(size=(200, dim)).astype(np.float32)
index.search(q / np.linalg.norm(q, axis=1, keepdims=True), 10)
print(json.dumps({"resident": rss() - before}))
"""


def resident_bytes(path: Path, n: int, mmap: bool) -> int:
    run = subprocess.run([sys.executable, "-c", RESIDENT, str(path), str(n), str(DIM), "1" if mmap else "0"],
                         check=True, capture_output=True, text=True)
    return json.loads(run.stdout)["resident"]


def measure(n: int, args) -> str:
    from imagerec.ann.base import AnnSettings
    from imagerec.ann.ivfpq import IvfPqBackend

    vectors = vectors_file(n)
    existing = OUT / f"ivfpq_{n}.ivfpq"
    meta = type("Meta", (), {"params": {}, "dim": DIM, "count": n})
    if args.reuse and existing.exists():  # measure an index built by an earlier run (build time not re-measured)
        path, build_s = existing, float("nan")
        index = IvfPqBackend(AnnSettings(kind="ivfpq", params={"nprobe": args.nprobe})).load([path], meta)
        ivf = __import__("faiss").extract_index_ivf(index._index)
        params = {"nlist": ivf.nlist, "m": ivf.pq.M if hasattr(ivf, "pq") else "?", "nprobe": index.default_params["nprobe"]}
    else:
        path, params, build_s = build(vectors, OUT / f"ivfpq_{n}")
        index = IvfPqBackend(AnnSettings(kind="ivfpq", params={"nprobe": args.nprobe})).load([path], meta)
        params["nprobe"] = index.default_params["nprobe"]
    rng = np.random.default_rng(1)
    qi = rng.choice(n, size=args.queries, replace=False)
    queries = np.asarray(vectors[np.sort(qi)])
    truth = exact_top(vectors, queries, 11)[:, 1:]  # the query row itself is its own first hit
    _, cand = index.search(queries, args.candidates + 1)
    cand_recall, final_recall, lat, gap = [], [], [], []
    import faiss

    faiss.omp_set_num_threads(1)
    for own, q, row, t in zip(np.sort(qi), queries, cand, truth):
        t0 = time.perf_counter()
        _, c = index.search(q[None], args.candidates + 1)
        c = np.sort(c[0][(c[0] >= 0) & (c[0] != own)])
        exact = np.asarray(vectors[c]) @ q
        final = c[np.argsort(-exact)][:10]
        lat.append(time.perf_counter() - t0)
        cand_recall.append(len(set(row[row != own][:10]) & set(t)) / 10)
        final_recall.append(len(set(final) & set(t)) / 10)
        gap.append(1.0 - float((np.asarray(vectors[np.sort(final)]) @ q).mean() / (np.asarray(vectors[np.sort(t)]) @ q).mean()))
    disk = path.stat().st_size / n
    res_read, res_mmap = resident_bytes(path, n, False) / n, resident_bytes(path, n, True) / n
    p50, p95 = np.percentile(np.asarray(lat) * 1000, [50, 95])
    return (f"| {n:,} | {params['nlist']} / {params['m']} / {params['nprobe']} | {build_s:.0f} | {disk:.1f} | {res_read:.1f} | "
            f"{res_mmap:.1f} | {np.mean(cand_recall):.3f} | {np.mean(final_recall):.3f} | {100 * np.mean(gap):.2f} % | "
            f"{p50:.1f} / {p95:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[550_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=200, help="Candidates re-ranked exactly (query.candidates).")
    ap.add_argument("--nprobe", type=int, help="Lists scanned per query (default: the backend's rule).")
    ap.add_argument("--reuse", action="store_true", help="Measure the index files of an earlier run instead of building.")
    args = ap.parse_args()
    print(f"candidates re-ranked: {args.candidates}")
    print("| vectors | nlist / m / nprobe | build s | file B/vector | private resident B/vector (read) | private resident B/vector (mmap) "
          "| recall@10 candidates | recall@10 re-ranked | mean cosine of the re-ranked top-10 below the true one | query p50 / p95 ms |\n"
          "|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for n in args.n:
        print(measure(n, args), flush=True)
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
