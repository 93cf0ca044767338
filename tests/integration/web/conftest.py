"""Fixtures of the web tests: a small real indexed collection and a real server on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ann_support import index_and_build, write_collection_config
from web_support import MAX_UPLOAD_BYTES, MAX_UPLOAD_IMAGES, Server, copy_sample


@pytest.fixture(scope="package")
def web_collection(tmp_path_factory, tiny_model_file):
    """40 real photos in 4 folders, indexed, ANN built (tests may read, not change it)."""
    base = tmp_path_factory.mktemp("web_collection")
    web = {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_upload_images": MAX_UPLOAD_IMAGES}
    collection = write_collection_config(base, copy_sample(base / "images"), tiny_model_file, web=web)
    index_and_build(collection)
    return collection


@pytest.fixture(scope="package")
def server_tmp(tmp_path_factory) -> Path:
    """The server's TMPDIR: uploads are spooled here and must be gone after each request."""
    return tmp_path_factory.mktemp("server_tmp")


@pytest.fixture(scope="package")
def server(web_collection, server_tmp):
    running = Server(web_collection.config_path, tmpdir=server_tmp)
    yield running
    running.stop()


@pytest.fixture
def fresh_collection(tmp_path, tiny_model_file):
    """make(per_folder, build=True): a collection of its own that a test may change."""

    def make(per_folder: int = 4, build: bool = True):
        collection = write_collection_config(tmp_path, copy_sample(tmp_path / "images", per_folder), tiny_model_file)
        if build:
            index_and_build(collection)
        else:
            from imagerec.indexing.run import index_collection

            index_collection(collection.config())
        return collection

    return make
