"""16 threads share one collection object and query it while another process indexes new images.

Results are a pure function of the store snapshot (its data version) and the query: every answer
given for the same (query, data version) must be identical, and the answers at the first and the last
version must equal a single-threaded query on that same snapshot.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import imagerec
from ann_support import SAMPLE_DIR, index_and_build, write_collection_config

THREADS = 16
MIN_SECONDS = 4.0


def _fingerprint(response) -> tuple:
    return tuple((r.id, r.score, tuple(sorted(r.scores.items())), r.near_duplicate) for r in response.results)


def _split_sample(root: Path, later: Path) -> list[Path]:
    """Copy half of each sample folder into ``root`` now; the other half into ``later`` (indexed during the test)."""
    held_back = []
    for folder in sorted(p for p in SAMPLE_DIR.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        for i, path in enumerate(files):
            target = (root if i % 2 == 0 else later) / folder.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            if i % 2:
                held_back.append(target)
    return held_back


def test_sixteen_threads_share_one_collection_while_another_process_indexes(tmp_path, tiny_model_file):
    root, later = tmp_path / "photos", tmp_path / "later"
    _split_sample(root, later)
    collection = write_collection_config(tmp_path, root, tiny_model_file)
    index_and_build(collection)
    external = sorted(later.rglob("*.jpg"))[:3]  # decoded and embedded per query: exercises the shared embedder

    with imagerec.open(collection.config_path) as col:
        query_ids = [int(i) for i in col.recommender().store.embedding_ids(col.recommender().model_id)[::15]]
        assert len(query_ids) >= 8

        def ask(n: int):
            if n % 5 == 4:
                return ("image", str(external[n % len(external)])), col.query(images=[external[n % len(external)]], k=10)
            qid = query_ids[n % len(query_ids)]
            return ("id", qid), col.query(ids=[qid], k=10)

        before = {}
        for n in range(len(query_ids) * 5):
            key, response = ask(n)
            before[key] = (response.data_version, _fingerprint(response))

        for path in later.rglob("*.jpg"):  # the other process finds these and indexes them while we query
            target = root / path.relative_to(later)
            shutil.copy(path, target)
        indexer = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(collection.config_path), "index", "-q"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        answers: dict[tuple, set] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()
        started = time.monotonic()
        indexer_done_at: list[float] = []

        def worker(seed: int) -> None:
            n = seed
            try:
                while True:
                    now = time.monotonic()
                    if now - started > MIN_SECONDS and indexer_done_at and now - indexer_done_at[0] > 1.5:
                        return
                    if now - started > 120:
                        raise TimeoutError("indexer did not finish")
                    key, response = ask(n)
                    with lock:
                        answers.setdefault((key, response.data_version), set()).add(_fingerprint(response))
                    n += THREADS
            except BaseException as exc:  # collected, then asserted on in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        out, err = indexer.communicate(timeout=180)
        indexer_done_at.append(time.monotonic())
        for t in threads:
            t.join()
        assert indexer.returncode == 0, err
        assert not errors, errors[:3]

        versions = {version for (_, version) in answers}
        assert len(versions) >= 2, "the index run changed nothing while the threads queried"
        inconsistent = {k: v for k, v in answers.items() if len(v) != 1}
        assert not inconsistent, f"{len(inconsistent)} (query, snapshot) pairs got different answers"
        for key, (version, fingerprint) in before.items():
            if (key, version) in answers:
                assert answers[(key, version)] == {fingerprint}

        final = max(versions)
        checked = 0
        for n in range(len(query_ids) * 5):  # single-threaded, on the final snapshot
            key, response = ask(n)
            assert response.data_version == final
            if (key, final) in answers:
                assert answers[(key, final)] == {_fingerprint(response)}
                checked += 1
        assert checked >= len(query_ids)
