"""The JSON API under ``/api`` that the page uses (documented at ``/docs``).

Images are addressed only by integer id; no endpoint takes a path. Errors are JSON
``{"detail": "<one line>", "kind": "..."}`` (see ``app.py``), never a stack trace.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from imagerec.errors import ImageLoadError, QueryError, StoreError
from imagerec.search.fusion import Weights
from imagerec.search.recommender import SearchSettings
from imagerec.store.records import display_path
from imagerec.web import catalog
from imagerec.web.catalog import NotFound
from imagerec.web.uploads import saved_uploads

router = APIRouter(prefix="/api")
K = Annotated[int | None, Query(ge=1, le=1000, description="How many results (default: query.top_k).")]
W = Annotated[float | None, Query(ge=0, description="Weight of this signal (default: the config's).")]
THUMB_CACHE = "private, max-age=3600"


def _services(request: Request):
    return request.app.state.services


def _command(services, name: str) -> str:
    source = services.config.source
    return f"imagerec --config {source} {name}" if source else f"imagerec {name}"


@router.get("/status", summary="What the collection holds and what to run next")
def status(request: Request) -> dict[str, Any]:
    """Counts, the ANN index state and a hint naming the command to run next (or null)."""
    services = _services(request)
    try:
        report = services.collection.status().to_dict()
    except StoreError:
        return {"images": 0, "with_embedding": 0, "ann": None, "database": False,
                "hint": f"the collection is not indexed yet; run '{_command(services, 'index')}'"}
    ann, hint = report["ann"], None
    if report["images"] == 0:
        hint = f"the collection is empty; put images under {services.image_root} and run '{_command(services, 'index')}'"
    elif report["with_embedding"] == 0:
        hint = f"no embeddings yet; run '{_command(services, 'index')}' with a model file, then 'build-ann'"
    elif ann is None:
        hint = f"no ANN index yet: browsing works, similar images need '{_command(services, 'build-ann')}'"
    elif ann["state"] != "current":
        hint = f"the ANN index is {ann['state']}: run '{_command(services, 'build-ann')}' to include the latest changes"
    q = services.config.query
    weights = SearchSettings.from_config(services.config).weights_for(report["model_init"])
    defaults = {"k": q.top_k, "weights": weights.as_dict()}
    return {**report, "database": True, "hint": hint, "image_root": str(services.image_root), "defaults": defaults}


@router.get("/folders", summary="Images per top-level folder")
def folders(request: Request) -> dict[str, int]:
    """Top-level folders and their image counts, for the folder filter."""
    return catalog.folders(_services(request).store())


@router.get("/images", summary="One page of the collection, in path order")
def images(request: Request, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100,
           folder: Annotated[str | None, Query(description="A top-level folder (see /api/folders).")] = None) -> dict[str, Any]:
    """Ids and relative paths of one page of images; ``total`` counts the whole folder."""
    total, rows = catalog.page(_services(request).store(), offset, limit, folder)
    return {"total": total, "offset": offset, "limit": limit, "folder": folder,
            "images": [{"id": i, "path": p} for i, p in rows]}


@router.get("/duplicates", summary="Groups of duplicate images in the collection")
async def duplicates(request: Request,
                     tier: Annotated[Literal["exact", "near", "similar"] | None, Query(description="Loosest relation in a group.")] = None,
                     max_bits: Annotated[int | None, Query(ge=0, le=32, description="dHash bits of an edited copy.")] = None,
                     min_similarity: Annotated[float | None, Query(ge=-1, le=1, description="Cosine of the same scene.")] = None,
                     ) -> dict[str, Any]:
    """What ``imagerec duplicates --json`` prints, members addressed by id and relative path (no absolute paths)."""
    collection = _services(request).collection
    report = await run_in_threadpool(collection.duplicates, tier=tier, max_bits=max_bits, min_similarity=min_similarity)
    answer = report.to_dict()
    for group in answer["groups"]:
        for member in group["members"]:
            del member["path"]
    return answer


def _weights(rec, w_embedding, w_color, w_dhash) -> Weights:
    return Weights.merged(rec.weights, {"embedding": w_embedding, "color": w_color, "dhash": w_dhash})


def _answer(response, k: int) -> dict[str, Any]:
    results = [{"rank": r.rank, "id": r.id, "path": r.relpath, "score": r.score, "scores": dict(r.scores),
                "hamming": r.hamming, "near_duplicate": r.near_duplicate, "match": r.match} for r in response.results]
    return {"queries": [q.label for q in response.queries], "k": k, "weights": response.weights.as_dict(),
            "results": results, "notices": response.notices, "data_version": response.data_version,
            "candidates": response.candidates, "timings": response.timings}


@router.get("/images/{image_id}/similar", summary="The k images most similar to one collection image")
def similar(request: Request, image_id: str, k: K = None, w_embedding: W = None, w_color: W = None,
            w_dhash: W = None) -> dict[str, Any]:
    """Results with ``id``, ``path``, fused ``score``, ``scores`` per signal and ``near_duplicate``."""
    number = catalog.parse_id(image_id)
    rec = _services(request).recommender()
    k = k or rec.settings.top_k
    try:
        response = rec.search(ids=[number], top_k=k, weights=_weights(rec, w_embedding, w_color, w_dhash))
    except QueryError as exc:
        if str(exc).startswith("no image with id"):
            raise NotFound(str(exc)) from None
        raise
    rel = response.queries[0].rel_path
    return {**_answer(response, k), "query": {"id": number, "path": display_path(rel) if rel else str(number)}}


@router.post("/search", summary="Similar images to one or more uploaded images (form field 'images')")
async def search(request: Request, k: K = None, w_embedding: W = None, w_color: W = None,
                 w_dhash: W = None) -> dict[str, Any]:
    """Decoded as ``query --image`` does, never stored; the answer's ``token`` re-ranks without re-uploading."""
    services = _services(request)
    web = services.config.web
    rec = await run_in_threadpool(services.recommender)  # no index: say so before reading the upload
    async with saved_uploads(request, web.max_upload_bytes, web.max_upload_images) as files:
        return await run_in_threadpool(_search_files, services, rec, files, k, (w_embedding, w_color, w_dhash))


def _search_files(services, rec, files, k, weights) -> dict[str, Any]:
    queries = []
    for name, path in files:
        try:
            queries.append(rec.image_from_path(path))
        except QueryError as exc:  # its message names the temp file: name the upload instead
            raise QueryError(str(exc).replace(str(path), name)) from None
    k = k or rec.settings.top_k
    response = rec.query(queries, top_k=k, weights=_weights(rec, *weights))
    names = [name for name, _ in files]
    return {**_answer(response, k), "queries": names, "token": services.remember(names, queries)}


@router.get("/search/{token}", summary="Re-rank an earlier upload search with other weights or k")
def rerank(request: Request, token: str, k: K = None, w_embedding: W = None, w_color: W = None,
           w_dhash: W = None) -> dict[str, Any]:
    """The uploaded images of ``token`` searched again (the server keeps the last 64 uploads' features)."""
    services = _services(request)
    remembered = services.recall(token)
    if remembered is None:
        raise NotFound("this upload search has expired; upload the image again")
    names, queries = remembered
    rec = services.recommender()
    k = k or rec.settings.top_k
    response = rec.query(queries, top_k=k, weights=_weights(rec, w_embedding, w_color, w_dhash))
    return {**_answer(response, k), "queries": names, "token": token}


@router.get("/images/{image_id}/thumbnail", summary="A JPEG thumbnail (made on first request, then cached)",
            response_class=Response)
def thumbnail(request: Request, image_id: str, size: Annotated[int | None, Query(ge=16, le=2048)] = None):
    """JPEG at the smallest configured size covering ``size``; ``ETag`` + ``Cache-Control``, 304 on a match."""
    services = _services(request)
    file = catalog.image_file(services.store(), services.image_root, catalog.parse_id(image_id))
    try:
        thumb = services.thumbnails.get(file.id, file.path, services.thumbnails.size_for(size))
    except ImageLoadError as exc:
        raise NotFound(f"image {file.id} ({file.relpath}) cannot be decoded any more ({exc}); run 'index'") from None
    headers = {"ETag": thumb.etag, "Cache-Control": THUMB_CACHE, "X-Thumbnail-Cache": "miss" if thumb.made else "hit"}
    if request.headers.get("if-none-match") == thumb.etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(thumb.path, media_type="image/jpeg", headers=headers)


@router.get("/images/{image_id}/file", summary="The original file", response_class=FileResponse)
def original(request: Request, image_id: str):
    """The original file, only if it still lies under ``data.image_root`` once symlinks are resolved."""
    services = _services(request)
    file = catalog.image_file(services.store(), services.image_root, catalog.parse_id(image_id))
    return FileResponse(file.path, headers={"Cache-Control": "private, max-age=60"},
                        content_disposition_type="inline", filename=file.path.name)
