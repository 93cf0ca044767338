"""``imagerec serve`` as a command, and the states of a collection it must explain: empty, no ANN
index yet (then built by another process: picked up without a restart), stale index."""

from __future__ import annotations

import shutil
import subprocess
import sys

from ann_support import SAMPLE_DIR, run_cli, write_collection_config
from web_support import Server, copy_sample


def test_empty_collection_says_what_to_run(tmp_path, tiny_model_file):
    (tmp_path / "images").mkdir()
    collection = write_collection_config(tmp_path, tmp_path / "images", tiny_model_file)
    running = Server(collection.config_path)
    try:
        status = running.client.get("/api/status").json()
        assert status["images"] == 0 and "not indexed yet" in status["hint"] and " index" in status["hint"]
        assert running.client.get("/api/images").status_code == 503
        similar = running.client.get("/api/images/1/similar")
        assert similar.status_code == 400 and "run 'index' first" in similar.json()["detail"]
        assert running.client.get("/").status_code == 200
    finally:
        running.stop()


def test_no_ann_index_then_build_ann_is_picked_up(fresh_collection):
    collection = fresh_collection(3, build=False)
    running = Server(collection.config_path)
    try:
        status = running.client.get("/api/status").json()
        assert status["ann"] is None and "build-ann" in status["hint"]
        assert running.client.get("/api/images").json()["total"] == 12  # browsing works without an index
        missing = running.client.get("/api/images/1/similar")
        assert missing.status_code == 409 and missing.json()["kind"] == "no_ann_index"
        assert "build-ann" in missing.json()["detail"]
        built = run_cli(collection.config_path, "build-ann")
        assert built.returncode == 0, built.stderr
        answer = running.client.get("/api/images/1/similar", params={"k": 5})
        assert answer.status_code == 200 and len(answer.json()["results"]) == 5
        assert running.client.get("/api/status").json()["hint"] is None
    finally:
        running.stop()


def test_new_images_after_build_show_a_stale_banner_and_rebuild_is_picked_up(fresh_collection):
    collection = fresh_collection(2)
    running = Server(collection.config_path)
    try:
        before = running.client.get("/api/images/1/similar", params={"k": 50}).json()
        extra = collection.root / "bonsai"
        extra.mkdir()
        for src in sorted((SAMPLE_DIR / "bonsai").iterdir())[:3]:
            shutil.copy(src, extra / src.name)
        assert run_cli(collection.config_path, "index").returncode == 0
        status = running.client.get("/api/status").json()
        assert status["ann"]["state"] == "stale" and "build-ann" in status["hint"]
        stale = running.client.get("/api/images/1/similar", params={"k": 50}).json()
        assert len(stale["results"]) == len(before["results"]) + 3  # new rows are searched even before the rebuild
        assert any("older" in n or "build-ann" in n for n in stale["notices"]), stale["notices"]
        assert run_cli(collection.config_path, "build-ann").returncode == 0
        fresh = running.client.get("/api/images/1/similar", params={"k": 50}).json()
        assert not fresh["notices"] and running.client.get("/api/status").json()["hint"] is None
    finally:
        running.stop()


def test_non_loopback_host_warns(web_collection):
    running = Server(web_collection.config_path, "--host", "0.0.0.0")
    try:
        assert running.client.get("/api/status").status_code == 200
    finally:
        err = running.stop()
    assert "warning: serving on 0.0.0.0" in err and "visible to the network" in err


def test_loopback_by_default_and_busy_port_is_one_line(web_collection):
    running = Server(web_collection.config_path)
    try:
        assert running.url.startswith("http://127.0.0.1:")
        port = running.url.rsplit(":", 1)[1].strip("/")
        busy = subprocess.run([sys.executable, "-m", "imagerec", "--config", str(web_collection.config_path), "serve",
                               "--port", port], capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1 and busy.stderr.startswith("error: cannot listen on 127.0.0.1:" + port)
        assert "Traceback" not in busy.stderr and len(busy.stderr.strip().splitlines()) == 1
    finally:
        err = running.stop()
    assert "warning" not in err


def test_bad_web_config_is_one_line(tmp_path, tiny_model_file):
    collection = write_collection_config(tmp_path, copy_sample(tmp_path / "images", 1), tiny_model_file,
                                         web={"max_upload_images": 0})
    result = run_cli(collection.config_path, "serve")
    assert result.returncode == 2 and "web.max_upload_images" in result.stderr and "Traceback" not in result.stderr

