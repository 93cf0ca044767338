"""The local web app of ``imagerec serve``: ``create_app(collection)`` → a FastAPI app (page, ``/api``, ``/docs``)."""

from imagerec.web.app import create_app

__all__ = ["create_app"]
