"""The SQLite store of a collection: images, features, embeddings, skip records (see ``sqlite.py``)."""

from imagerec.store.records import FeatureRows, ImageRecord, SkipRecord, StoredImage, StoredState, WriteResult
from imagerec.store.readers import StoreReaders
from imagerec.store.sqlite import Store

__all__ = ["FeatureRows", "ImageRecord", "SkipRecord", "Store", "StoreReaders", "StoredImage", "StoredState", "WriteResult"]
