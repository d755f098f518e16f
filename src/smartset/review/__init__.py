"""Review: a keyboard-driven re-annotation web app over the catalog.

``smartset review WORKSPACE`` serves it on 127.0.0.1 (:func:`serve`); :func:`create_app`
builds the ASGI app; :mod:`smartset.review.queues` says what to look at and why,
:mod:`smartset.review.actions` records decisions as label and mark events,
:mod:`smartset.review.plans` applies cleaning plans item by item. The front end is plain
HTML, CSS and JavaScript in ``static/``, nothing fetched from elsewhere.
"""

from smartset.review.keys import KEYS, class_keys
from smartset.review.queues import list_queues, queue, queue_entries, reviewed_ids
from smartset.review.server import new_token, running_server, serve

__all__ = ["create_app", "serve", "running_server", "new_token", "list_queues", "queue",
           "queue_entries", "reviewed_ids", "KEYS", "class_keys"]


def __getattr__(name: str):
    if name == "create_app":  # FastAPI is imported only when the app is built
        from smartset.review.app import create_app

        return create_app
    raise AttributeError(f"module 'smartset.review' has no attribute {name!r}")
