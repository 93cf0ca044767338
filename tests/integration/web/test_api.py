"""The JSON API of a real ``imagerec serve`` process over a real indexed collection."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from web_support import FOLDERS, MAX_UPLOAD_BYTES, MAX_UPLOAD_IMAGES, PER_FOLDER
from ann_support import SAMPLE_DIR

LEOPARD = SAMPLE_DIR / "Leopards" / "image_0002.jpg"


def ids_of(answer) -> list[int]:
    return [r["id"] for r in answer["results"]]


def test_status_counts_and_folders(server):
    status = server.client.get("/api/status").json()
    assert status["images"] == status["with_embedding"] == len(FOLDERS) * PER_FOLDER
    assert status["ann"]["state"] == "current" and status["hint"] is None
    assert server.client.get("/api/folders").json() == {f: PER_FOLDER for f in FOLDERS}


def test_images_pages_and_folder_filter(server):
    first = server.client.get("/api/images", params={"limit": 15}).json()
    second = server.client.get("/api/images", params={"limit": 15, "offset": 15}).json()
    assert first["total"] == len(FOLDERS) * PER_FOLDER and len(first["images"]) == 15
    paths = [i["path"] for i in first["images"] + second["images"]]
    assert paths == sorted(paths) and len(set(paths)) == 30
    only = server.client.get("/api/images", params={"folder": "sunflower", "limit": 100}).json()
    assert only["total"] == PER_FOLDER and all(i["path"].startswith("sunflower/") for i in only["images"])
    assert server.client.get("/api/images", params={"folder": "nope"}).json()["total"] == 0
    assert server.client.get("/api/images", params={"limit": 0}).status_code == 422


def test_similar_results_and_weights_reorder(server):
    answer = server.client.get("/api/images/3/similar", params={"k": 8}).json()
    assert len(answer["results"]) == 8 and 3 not in ids_of(answer)
    first = answer["results"][0]
    assert set(first) >= {"id", "path", "score", "scores", "near_duplicate"}
    assert set(first["scores"]) == {"embedding", "color", "dhash"}
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    by_color = server.client.get("/api/images/3/similar", params={"k": 8, "w_embedding": 0, "w_color": 1, "w_dhash": 0}).json()
    colors = [r["scores"]["color"] for r in by_color["results"]]
    assert colors == sorted(colors, reverse=True) and ids_of(by_color) != ids_of(answer)
    zero = server.client.get("/api/images/3/similar", params={"w_embedding": 0, "w_color": 0, "w_dhash": 0})
    assert zero.status_code == 400 and "must not all be 0" in zero.json()["detail"]


@pytest.mark.parametrize("raw", ["0", "999999", "-1", "abc", "1.5", "99999999999999999999", "9223372036854775807",
                                 "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "1%2F..%2F2", "%2e%2e"])
@pytest.mark.parametrize("what", ["file", "thumbnail", "similar"])
def test_bad_ids_and_traversal_are_404(server, raw, what):
    response = server.client.get(f"/api/images/{raw}/{what}")
    assert response.status_code == 404, response.text
    assert "root:" not in response.text


@pytest.mark.parametrize("url", ["/api/images/../../../../etc/passwd", "/static/../../../../etc/passwd",
                                 "/static/%2e%2e/%2e%2e/config.py", "/api/images//etc/passwd/file", "/etc/passwd"])
def test_paths_outside_the_api_are_404(server, url):
    response = server.client.get(url)
    assert response.status_code == 404 and "root:" not in response.text


def test_file_is_the_original(server, web_collection):
    page = server.client.get("/api/images", params={"folder": "watch", "limit": 1}).json()["images"][0]
    response = server.client.get(f"/api/images/{page['id']}/file")
    assert response.status_code == 200
    assert response.content == (web_collection.root / page["path"]).read_bytes()


def test_symlink_leaving_the_root_is_404(fresh_collection, tmp_path):
    from web_support import Server

    collection = fresh_collection(2)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(LEOPARD.read_bytes())
    victim = collection.root / "watch" / sorted(os.listdir(collection.root / "watch"))[0]
    victim.unlink()
    victim.symlink_to(secret)  # the DB still names it: the served path must be re-checked
    inside = collection.root / "Leopards" / "inside.jpg"
    running = Server(collection.config_path)
    try:
        rows = running.client.get("/api/images", params={"folder": "watch"}).json()["images"]
        victim_id = next(r["id"] for r in rows if r["path"] == f"watch/{victim.name}")
        for what in ("file", "thumbnail"):
            response = running.client.get(f"/api/images/{victim_id}/{what}")
            assert response.status_code == 404 and "not under data.image_root" in response.json()["detail"]
        other = next(r["id"] for r in rows if r["id"] != victim_id)
        assert running.client.get(f"/api/images/{other}/file").status_code == 200
        assert not inside.exists()
    finally:
        running.stop()


def test_thumbnails_on_demand_cached_with_headers(server, web_collection):
    thumbs = web_collection.config().output.layout.thumbs_dir
    image_id = server.client.get("/api/images", params={"folder": "Motorbikes", "limit": 1}).json()["images"][0]["id"]
    before = set(thumbs.rglob("*.jpg")) if thumbs.exists() else set()
    miss = server.client.get(f"/api/images/{image_id}/thumbnail", params={"size": 200})
    hit = server.client.get(f"/api/images/{image_id}/thumbnail", params={"size": 200})
    assert miss.status_code == hit.status_code == 200
    assert (miss.headers["x-thumbnail-cache"], hit.headers["x-thumbnail-cache"]) == ("miss", "hit")
    assert miss.headers["etag"] == hit.headers["etag"] and "max-age" in hit.headers["cache-control"]
    assert miss.content == hit.content
    assert max(Image.open(io.BytesIO(hit.content)).size) == 256  # the configured size covering 200
    made = set(thumbs.rglob("*.jpg")) - before
    assert [p.name.split("-")[:2] for p in made] == [[str(image_id), "256"]]
    assert len(list(thumbs.rglob("*.jpg"))) < len(FOLDERS) * PER_FOLDER  # never the whole collection up front
    again = server.client.get(f"/api/images/{image_id}/thumbnail", params={"size": 200},
                              headers={"If-None-Match": hit.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_thumbnail_key_follows_file_mtime(fresh_collection):
    from web_support import Server

    collection = fresh_collection(2, build=False)
    running = Server(collection.config_path)
    try:
        row = running.client.get("/api/images", params={"limit": 1}).json()["images"][0]
        first = running.client.get(f"/api/images/{row['id']}/thumbnail")
        path = collection.root / row["path"]
        Image.new("RGB", (80, 60), (200, 10, 10)).save(path, "JPEG")  # same id, new content
        second = running.client.get(f"/api/images/{row['id']}/thumbnail")
        assert second.headers["x-thumbnail-cache"] == "miss" and second.headers["etag"] != first.headers["etag"]
        assert Image.open(io.BytesIO(second.content)).convert("RGB").getpixel((5, 5))[0] > 150
    finally:
        running.stop()


def _upload(server, *files, **params):
    parts = [("images", (name, data, "application/octet-stream")) for name, data in files]
    return server.client.post("/api/search", params=params, files=parts)


def test_upload_search_and_rerank_without_reupload(server, server_tmp, web_collection):
    before = sorted(p.name for p in web_collection.root.rglob("*"))
    answer = _upload(server, ("leopard.jpg", LEOPARD.read_bytes()), k=6)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["queries"] == ["leopard.jpg"] and len(body["results"]) == 6
    assert body["results"][0]["path"] == "Leopards/image_0002.jpg" and body["results"][0]["near_duplicate"]
    rerank = server.client.get(f"/api/search/{body['token']}", params={"k": 6, "w_embedding": 0, "w_color": 1, "w_dhash": 0})
    colors = [r["scores"]["color"] for r in rerank.json()["results"]]
    assert colors == sorted(colors, reverse=True) and rerank.json()["queries"] == ["leopard.jpg"]
    assert server.client.get("/api/search/not-a-token").status_code == 404
    two = _upload(server, ("a.jpg", LEOPARD.read_bytes()), ("b.jpg", (SAMPLE_DIR / "watch" / "image_0001.jpg").read_bytes()))
    assert two.status_code == 200 and two.json()["queries"] == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in web_collection.root.rglob("*")) == before
    assert list(server_tmp.iterdir()) == []


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20_000, 10_000)).save(buf, "PNG")  # 200 Mpx, a few kB compressed
    return buf.getvalue()


@pytest.mark.parametrize("name,data,reason", [
    ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "cannot use this query image"),
    ("notes.txt", b"hello", "cannot use this query image"),
    ("bomb.png", None, "decompression_bomb"),
    ("truncated.jpg", LEOPARD.read_bytes()[:3000], "cannot use this query image"),
])
def test_bad_uploads_are_400_with_reason(server, server_tmp, name, data, reason):
    response = _upload(server, (name, _bomb() if data is None else data))
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert reason in detail and name in detail and "Traceback" not in detail and str(server_tmp) not in detail
    assert list(server_tmp.iterdir()) == []


def test_upload_limits(server, server_tmp):
    big = os.urandom(MAX_UPLOAD_BYTES + 1000)
    assert _upload(server, ("big.jpg", big)).status_code == 413

    def chunks():  # no Content-Length: the cap must hold while streaming
        head = b'--XX\r\nContent-Disposition: form-data; name="images"; filename="s.jpg"\r\n\r\n'
        yield head
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 2):
            yield os.urandom(65536)

    streamed = server.client.post("/api/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert streamed.status_code == 413 and "web.max_upload_bytes" in streamed.json()["detail"]
    many = _upload(server, *[(f"{i}.jpg", LEOPARD.read_bytes()) for i in range(MAX_UPLOAD_IMAGES + 1)])
    assert many.status_code == 400 and "web.max_upload_images" in many.json()["detail"]
    assert server.client.post("/api/search", json={"x": 1}).status_code == 400
    no_file = server.client.post("/api/search", data={"a": "b"}, files={})
    assert no_file.status_code == 400
    assert list(server_tmp.iterdir()) == []


def test_docs_and_page_are_offline(server):
    schema = server.client.get("/openapi.json").json()
    for path in ("/api/status", "/api/images", "/api/images/{image_id}/similar", "/api/search",
                 "/api/images/{image_id}/thumbnail", "/api/images/{image_id}/file"):
        assert path in schema["paths"]
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text
    assert server.client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = server.client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = server.client.get(asset).text
        assert "http://" not in text and "https://" not in text, asset
