"""Upload bodies: size-capped while streaming, at most N files, spooled to a temp folder that is always removed.

Uploaded images are query images only: they go to a fresh temporary folder (never the collection or
``output.dir``) under their index in the request plus their extension (the loader's format hint),
and the folder is deleted when the request ends, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

CHUNK = 1 << 16


class UploadError(Exception):
    """An upload refused as a whole; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _too_large(max_bytes: int) -> UploadError:
    return UploadError(413, f"upload larger than web.max_upload_bytes ({max_bytes} bytes); send smaller or fewer images")


async def _capped(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > max_bytes:
            raise _too_large(max_bytes)
        yield chunk


def _suffix(filename: str | None) -> str:
    suffix = os.path.splitext(os.path.basename(filename or ""))[1].lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""


@asynccontextmanager
async def saved_uploads(request: Request, max_bytes: int, max_images: int) -> AsyncIterator[list[tuple[str, Path]]]:
    """(client file name, temp path) of every file in a multipart request; temp files removed on exit."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError(400, "send the images as multipart/form-data (form field 'images')")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    parser = MultiPartParser(request.headers, _capped(request.stream(), max_bytes), max_files=max_images, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        limit = f"at most web.max_upload_images ({max_images}) images per search" if "files" in exc.message.lower() else ""
        raise UploadError(400, f"bad upload: {limit or exc.message}") from None
    folder = Path(tempfile.mkdtemp(prefix="imagerec-upload-"))
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise UploadError(400, "no image in the upload (send one or more files in form field 'images')")
        saved = []
        for i, upload in enumerate(files):
            path = folder / f"upload-{i}{_suffix(upload.filename)}"
            with open(path, "wb") as out:
                shutil.copyfileobj(upload.file, out, CHUNK)
            saved.append((upload.filename or f"upload {i + 1}", path))
        yield saved
    finally:
        await form.close()
        shutil.rmtree(folder, ignore_errors=True)
