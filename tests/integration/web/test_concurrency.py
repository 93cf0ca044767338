"""20 parallel requests of mixed kinds answer correctly while ``index`` runs in another process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx

from ann_support import SAMPLE_DIR
from web_support import Server

LEOPARD = SAMPLE_DIR / "Leopards" / "image_0002.jpg"


def _request(url: str, kind: str, image_id: int, expected_path: str):
    with httpx.Client(base_url=url, timeout=120) as client:
        if kind == "similar":
            r = client.get(f"/api/images/{image_id}/similar", params={"k": 5})
            return r.status_code == 200 and len(r.json()["results"]) == 5 and image_id not in [x["id"] for x in r.json()["results"]]
        if kind == "upload":
            r = client.post("/api/search", params={"k": 3}, files=[("images", ("q.jpg", LEOPARD.read_bytes()))])
            return r.status_code == 200 and r.json()["results"][0]["path"] == "Leopards/image_0002.jpg"
        if kind == "thumbnail":
            r = client.get(f"/api/images/{image_id}/thumbnail")
            return r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and len(r.content) > 500
        if kind == "file":
            r = client.get(f"/api/images/{image_id}/file")
            return r.status_code == 200 and len(r.content) > 1000
        if kind == "images":
            r = client.get("/api/images", params={"limit": 500})
            return r.status_code == 200 and any(i["path"] == expected_path for i in r.json()["images"])
        r = client.get("/api/status")
        return r.status_code == 200 and r.json()["images"] >= 16


def test_parallel_mixed_requests_during_index(fresh_collection):
    collection = fresh_collection(4)
    running = Server(collection.config_path)
    rows = running.client.get("/api/images", params={"limit": 100}).json()["images"]
    for folder in ("bonsai", "ketch", "chandelier"):  # work for a concurrent 'index'
        (collection.root / folder).mkdir()
        for src in sorted((SAMPLE_DIR / folder).iterdir())[:25]:
            shutil.copy(src, collection.root / folder / src.name)
    indexer = subprocess.Popen([sys.executable, "-m", "imagerec", "--config", str(collection.config_path), "index"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kinds = ["similar", "upload", "thumbnail", "file", "images", "status"]
    try:
        rounds = 0
        while rounds < 2 or (indexer.poll() is None and rounds < 20):
            during = indexer.poll() is None
            jobs = [(kinds[i % len(kinds)], rows[i % len(rows)]) for i in range(20)]
            with ThreadPoolExecutor(20) as pool:
                answers = list(pool.map(lambda job: _request(running.url, job[0], job[1]["id"], job[1]["path"]), jobs))
            assert all(answers), [job[0] for job, ok in zip(jobs, answers) if not ok]
            rounds += 1
            if rounds == 1:
                assert during, "index finished before the first round: give it more work"
        _, err = indexer.communicate(timeout=300)
        assert indexer.returncode == 0, err
        assert running.client.get("/api/status").json()["images"] == 16 + 75
    finally:
        if indexer.poll() is None:
            indexer.kill()
        running.stop()
