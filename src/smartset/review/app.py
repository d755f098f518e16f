"""The review app: a JSON API over a workspace, and the static front end that uses it.

:func:`create_app` builds the ASGI app (FastAPI). Reads run on their own SQLite connections
from any thread; every write runs on one writer thread that owns the workspace's writer
connection (one writer, as the catalog wants). Endpoints (all under ``/api/`` need the
session token, see :mod:`smartset.review._http`):

==========================================  ==================================================
``GET  /api/session``                       workspace, author, classes with their keys, keys,
                                            limits
``GET  /api/queues``                        queues with progress (n of N reviewed)
``GET  /api/queue?name=Q&limit=N``          a queue's entries (sample, reason, score, group,
                                            plan item) and the state of its first N samples
``POST /api/items``                         ``{"ids": [...]}``: the state of these samples
``GET  /api/samples/{id}``                  focus view: state, history, model predictions,
                                            neighbours, lineage, findings, label issues
``GET  /api/samples/{id}/thumb``            JPEG thumbnail (cached by content hash)
``GET  /api/samples/{id}/image``            the image (web formats as stored, others as JPEG)
``GET  /api/samples/{id}/saliency``         its saliency map (PNG), precomputed by ``evaluate --saliency``
``POST /api/decisions``                     one decision (label, accept, exclude, include,
                                            multi_label, duplicate_of, unmark) with the
                                            version it is based on
``GET  /api/annotations/{id}/mask``         an RLE mask as a transparent PNG (focus view)
``POST /api/boxes``                         relabel or delete a detection box (or mask),
                                            with the annotation event it is based on
``POST /api/undo``                          revert decisions' events (labels, marks, boxes,
                                            tags)
``POST /api/classes/merge``                 ``{"sources": [...], "into": C}``
``POST /api/classes/rename``                ``{"old": A, "new": B}``
``POST /api/plans/decide``                  accept or reject a cleaning-plan item (also
                                            the suspicious tags': tag events)
``POST /api/export``                        freeze the reviewed state as a version
==========================================  ==================================================

Images are found by sample id in the catalog only: no request names a file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from smartset.detection.store import category_names
from smartset.errors import ConflictError, SmartsetError
from smartset.storage import is_url, read_bytes
from smartset.review import actions, plans
from smartset.review._http import Guard, error_body
from smartset.review.details import FocusData, mask_png, sample_overlays, sample_states
from smartset.review.keys import KEYS, class_keys
from smartset.review.queues import QueueNotFoundError, list_queues, queue

__all__ = ["create_app", "LOOPBACK_HOSTS", "MAX_BODY", "THUMB_SIZE"]

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
MAX_BODY = 64 * 1024
THUMB_SIZE = 128
_SAMPLE_ID = re.compile(r"\b[0-9a-f]{16}\b")  # a sample id, as reasons name them
FOCUS_SIZE = 1024
_WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                "WEBP": "image/webp"}
_MAX_RAW_BYTES = 20 * 1024 * 1024
_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
           "index.html": "text/html; charset=utf-8"}

SampleId = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                            pattern=r"^[A-Za-z0-9_.:-]+$")]
AnnotationId = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                                pattern=r"^[A-Za-z0-9_.:-]+$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# A class as it is in the catalog (to rename or merge it): any text, even one a newer
# ingest would refuse, so that old bad labels can be repaired.
ExistingLabel = Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY)]
# An event id: SQLite's integers are 64-bit; a larger number is a 422, not a 500.
EventId = Annotated[int, Field(ge=1, lt=1 << 63)]
QueueName = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Author = Annotated[str, StringConstraints(min_length=1, max_length=100,
                                          pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemsRequest(_Body):
    ids: list[SampleId] = Field(max_length=1000)


class DecisionRequest(_Body):
    action: Literal[actions.DECISIONS]  # type: ignore[valid-type]
    sample_id: SampleId
    queue: QueueName
    label: Label | None = None
    classes: list[Label] | None = Field(default=None, max_length=100)
    of: SampleId | None = None
    kind: Literal["exclude", "multi_label", "duplicate_of"] | None = None
    expected_event: EventId | None = None
    expected_mark: EventId | None = None
    author: Author | None = None
    note: str | None = Field(default=None, max_length=500)


class BoxDecisionRequest(_Body):
    action: Literal[actions.BOX_DECISIONS]  # type: ignore[valid-type]
    annotation_id: AnnotationId
    queue: QueueName
    category: Label | None = None
    expected_event: EventId | None = None
    author: Author | None = None
    note: str | None = Field(default=None, max_length=500)


class PlanRef(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    item: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class UndoRequest(_Body):
    label_events: list[EventId] = Field(default_factory=list, max_length=100_000)
    mark_events: list[EventId] = Field(default_factory=list, max_length=100_000)
    annotation_events: list[EventId] = Field(default_factory=list, max_length=100_000)
    tag_events: list[EventId] = Field(default_factory=list, max_length=100_000)
    queue: QueueName
    plan: PlanRef | None = None
    author: Author | None = None


class MergeRequest(_Body):
    sources: list[ExistingLabel] = Field(min_length=1, max_length=100)
    into: Label
    queue: QueueName
    author: Author | None = None


class RenameRequest(_Body):
    old: ExistingLabel
    new: Label
    queue: QueueName
    author: Author | None = None


class PlanDecisionRequest(_Body):
    plan: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    item: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    decision: Literal["accept", "reject"]
    queue: QueueName
    author: Author | None = None


class ExportRequest(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    description: str | None = Field(default=None, max_length=500)


class _Store:
    """Reads from any thread; writes on one thread, which owns the writer connection."""

    def __init__(self, path: Path, author: str | None):
        from smartset.workspace import Workspace, _default_author

        self.path = path
        self.reader = Workspace(path)
        self.reader.catalog.close()  # only reads from here on, each on its own connection
        self.author = author or _default_author()
        self.focus = FocusData(self.reader)
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="smartset-review-writer")
        self._writer = None

    def write(self, fn, /, *args, **kwargs):
        from smartset.workspace import Workspace

        def run():
            if self._writer is None:
                self._writer = Workspace(self.path)
            return fn(self._writer, *args, **kwargs)

        return self._executor.submit(run).result()

    def close(self) -> None:
        def shut():
            if self._writer is not None:
                self._writer.close()
                self._writer = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


def _static_files() -> dict[str, bytes]:
    folder = resources.files("smartset.review") / "static"
    return {name: (folder / name).read_bytes() for name in _STATIC}


def _json(data) -> Response:
    """JSON straight from ``json.dumps``: a queue of 10,000 entries through FastAPI's
    generic encoder costs more than the query that made it."""
    return Response(json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":")),
                    media_type="application/json", headers={"cache-control": "no-store"})


def _envelope(status: int, message: str, detail=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, detail), status_code=status,
                        headers={"cache-control": "no-store"})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"No such endpoint: {request.method} {request.url.path}."
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        return _envelope(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
                    for e in exc.errors()]
        first = problems[0] if problems else {"where": "request", "problem": "invalid"}
        return _envelope(422, f"Invalid request: {first['where']}: {first['problem']}.",
                         problems)

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError):
        message = str(exc)
        store = getattr(request.app.state, "store", None)
        if store is not None and exc.sample_id:  # a person knows the file, not its id
            message = _with_file(message, exc.sample_id, _relpath(store.reader, exc.sample_id))
        return _envelope(409, message, {"sample_id": exc.sample_id, "expected": exc.expected,
                                        "current": exc.current})

    @app.exception_handler(QueueNotFoundError)
    async def no_queue(request: Request, exc: QueueNotFoundError):
        return _envelope(404, str(exc))

    @app.exception_handler(SmartsetError)
    async def smartset_error(request: Request, exc: SmartsetError):
        return _envelope(400, str(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return _envelope(500, f"Internal error ({type(exc).__name__}); nothing half-done was "
                              f"saved. The server's log has the details.")


def create_app(workspace: str | os.PathLike, *, token: str, author: str | None = None,
               allowed_hosts: set[str] | None = LOOPBACK_HOSTS,
               max_body: int = MAX_BODY) -> FastAPI:
    """The review app over ``workspace``.

    ``token`` is the session token every ``/api/`` request must carry; ``author`` is who
    decisions are recorded as, unless a request names its reviewer (default:
    ``$SMARTSET_AUTHOR``, else ``$USER``); ``allowed_hosts`` are the ``Host`` names accepted
    (None: any, for a server bound beyond the loopback on purpose); ``max_body`` bounds
    request bodies (bytes). The guard of :mod:`smartset.review._http` checks every request
    before the endpoints see it.
    """
    if not token or len(token) < 16:
        raise ValueError("the session token must have at least 16 characters")
    path = Path(workspace).expanduser().resolve()
    store = _Store(path, author)
    static = _static_files()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        store.close()

    app = FastAPI(title="smartset review", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.store = store
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, max_body=max_body)
    _install_error_handlers(app)

    def who(requested: str | None) -> str:
        return requested or store.author

    def classes_with_keys() -> list[dict]:
        counts = store.reader.class_counts()
        names = sorted(counts)
        keys = class_keys(names)
        return [{"name": n, "key": keys.get(n), "count": counts[n]} for n in names]

    def state_of(sample_id: str | None) -> dict | None:
        if not sample_id:
            return None
        return sample_states(store.reader, [sample_id]).get(sample_id)

    def sample_file(sample_id: str):
        """The catalog row and the file of ``sample_id``, checked: the file must still be
        the one ingest saw (same size; same bytes when its mtime moved) and, followed
        through any links, lie inside its data root."""
        row = store.reader.file_record(sample_id)
        if row is None:
            raise StarletteHTTPException(404, f"No sample {sample_id!r} in the catalog.")
        root = row["root"]
        file = os.path.join(root, row["relpath"])  # a local path or an fsspec URL
        if row["status"] != "ok" or not (is_url(file) or os.path.isfile(file)):
            state = row["status"] if row["status"] != "ok" else "missing"
            raise StarletteHTTPException(404, f"The image of sample {sample_id} is {state}.")
        if not is_url(file):
            _check_local_file(sample_id, row, root, file)
        return row, file

    from smartset.thumbs import thumbnail_path
    shas: dict[str, str] = {}
    shas_lock = threading.Lock()

    def cached_thumb(sample_id: str) -> Path | None:
        """The thumbnail file already made for ``sample_id``, found without a query once
        the sample's content hash is known (one query loads them all)."""
        with shas_lock:
            if not shas:
                shas.update(store.reader.content_hashes())
            sha = shas.get(sample_id)
        if sha is None:
            return None
        target = thumbnail_path(store.path / "cache", sha, THUMB_SIZE)
        return target if target.is_file() else None

    def with_thumbs(states: dict[str, dict]) -> dict[str, dict]:
        """Thumbnails already made go inline (data URIs): the grid's first page is then
        one request, not 200. The others load by URL (and are made on the way)."""
        for sample_id, state in states.items():
            found = cached_thumb(sample_id)
            if found is not None:
                state["thumb"] = "data:image/jpeg;base64," + base64.b64encode(
                    found.read_bytes()).decode("ascii")
        return states

    def thumb_bytes(sample_id: str, size: int) -> bytes:
        from smartset.thumbs import thumbnail_jpeg

        row, file = sample_file(sample_id)
        data = thumbnail_jpeg(store.path / "cache", file, row["sha256"], size=size)
        if data is None:
            raise StarletteHTTPException(404, f"The image of sample {sample_id} cannot be "
                                              f"decoded (see 'smartset audit').")
        return data

    # -- the front end ------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return Response(static["index.html"], media_type=_STATIC["index.html"],
                        headers={"cache-control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str):
        if name not in static or name == "index.html":  # a fixed set, never a file path
            raise StarletteHTTPException(404, f"No static file {name!r}.")
        return Response(static[name], media_type=_STATIC[name],
                        headers={"cache-control": "no-cache"})

    # -- reads --------------------------------------------------------------------------
    @app.get("/api/session")
    def session():
        from smartset import __version__

        return _json({"workspace": store.path.name, "workspace_path": str(store.path),
                "author": store.author, "classes": classes_with_keys(),
                "box_categories": category_names(store.reader),
                "keys": [{"keys": k, "does": d} for k, d in KEYS],
                "limits": {"max_body": max_body, "items": 1000},
                "smartset": __version__})

    @app.get("/api/queues")
    def queues():
        return _json({"queues": list_queues(store.reader)})

    @app.get("/api/queue")
    def queue_view(name: Annotated[str, Query(min_length=1, max_length=300)],
                   limit: Annotated[int, Query(ge=0, le=1000)] = 200):
        info, entries = queue(store.reader, name)
        if info["kind"] == "plan":  # a plan's queue, or the suspicious tags (its plan's items)
            decided = plans.plan_decisions(store.reader,
                                           info.get("plan") or name.partition(":")[2])
            for entry in entries:
                entry["decision"] = decided.get(entry["item"], {}).get("decision")
        first = [e["sample_id"] for e in entries[:limit] if e["sample_id"]]
        # samples a reason names ("mark duplicate of ID"): their states too, so the page
        # shows their files instead of ids
        named = {m for e in entries[:limit] for m in _SAMPLE_ID.findall(e.get("reason") or "")}
        entries = [{k: v for k, v in e.items() if v is not None} for e in entries]  # leaner
        return _json({"queue": info, "entries": entries,
                      "items": with_thumbs(sample_states(store.reader,
                                                        first + sorted(named - set(first))))})

    @app.post("/api/items")
    def items(request: ItemsRequest):
        return _json({"items": with_thumbs(sample_states(store.reader, request.ids))})

    @app.get("/api/samples/{sample_id}")
    def focus(sample_id: Annotated[SampleId, PathParam()]):
        found = store.focus.focus(sample_id)
        if found is None:
            raise StarletteHTTPException(404, f"No sample {sample_id!r} in the catalog.")
        return _json(found)

    @app.get("/api/samples/{sample_id}/thumb")
    async def thumb(sample_id: Annotated[SampleId, PathParam()]):
        found = cached_thumb(sample_id)  # the common case: a small file read, no thread hop
        data = (found.read_bytes() if found is not None else
                await run_in_threadpool(thumb_bytes, sample_id, THUMB_SIZE))
        return Response(data, media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=86400"})

    @app.get("/api/samples/{sample_id}/image")
    def image(sample_id: Annotated[SampleId, PathParam()]):
        row, file = sample_file(sample_id)
        media = _WEB_FORMATS.get(str(row["format"]).upper())
        if media and row["size"] <= _MAX_RAW_BYTES:
            data = read_bytes(file)
            if hashlib.sha256(data).hexdigest() != row["sha256"]:  # the bytes served are
                raise _changed(sample_id, row)                       # the bytes ingested
        else:
            data, media = thumb_bytes(sample_id, FOCUS_SIZE), "image/jpeg"
        return Response(data, media_type=media,
                        headers={"cache-control": "private, max-age=86400",
                                 "content-disposition": "inline"})

    @app.get("/api/samples/{sample_id}/saliency")
    def saliency(sample_id: Annotated[SampleId, PathParam()]):
        path = store.focus.saliency_file(sample_id)  # precomputed by evaluate --saliency
        if path is None:
            raise StarletteHTTPException(404, f"No saliency map of {sample_id!r}: run "
                                              f"'smartset evaluate RUN --saliency'.")
        return Response(path.read_bytes(), media_type="image/png",
                        headers={"cache-control": "private, max-age=60"})

    @app.get("/api/annotations/{annotation_id}/mask")
    def mask(annotation_id: Annotated[AnnotationId, PathParam()]):
        data = mask_png(store.reader, annotation_id)
        if data is None:
            raise StarletteHTTPException(404, f"Annotation {annotation_id!r} has no mask.")
        return Response(data, media_type="image/png",
                        headers={"cache-control": "private, max-age=3600"})

    # -- writes -------------------------------------------------------------------------
    @app.post("/api/decisions")
    def decision(request: DecisionRequest):
        given = request.model_fields_set
        result = store.write(
            actions.decide, request.action, request.sample_id, queue=request.queue,
            author=who(request.author), label=request.label, classes=request.classes,
            of=request.of, kind=request.kind, note=request.note,
            expected_event=request.expected_event if "expected_event" in given else actions.UNSET,
            expected_mark=request.expected_mark if "expected_mark" in given else actions.UNSET)
        state = state_of(request.sample_id)
        message = _with_file(result.get("message"), request.sample_id, (state or {}).get("relpath"))
        return _json({**result, "message": message, "sample": state})

    @app.post("/api/boxes")
    def box_decision(request: BoxDecisionRequest):
        result = store.write(actions.decide_box, request.action, request.annotation_id,
                             queue=request.queue, author=who(request.author),
                             category=request.category, expected_event=request.expected_event,
                             note=request.note)
        sample_id = result["sample_id"]
        state = state_of(sample_id)
        message = _with_file(result.get("message"), sample_id, (state or {}).get("relpath"))
        return _json({**result, "message": message, "sample": state,
                      "overlays": sample_overlays(store.reader, sample_id)})

    @app.post("/api/undo")
    def undo(request: UndoRequest):
        result = store.write(actions.undo_events, label_events=request.label_events,
                             mark_events=request.mark_events,
                             annotation_events=request.annotation_events,
                             tag_events=request.tag_events, queue=request.queue,
                             author=who(request.author))
        if request.plan is not None:
            store.write(plans.forget_decision, request.plan.name, request.plan.item)
        ids = _event_samples(store.reader, request.label_events, request.mark_events,
                             request.annotation_events, request.tag_events)
        extra = {}
        if request.tag_events:  # the tags as they are again, for the suspicious-tags cards
            from smartset.tags import read_tags

            now_tags = read_tags(store.reader)
            extra["tags"] = {i: sorted(now_tags.get(i, ())) for i in ids[:1000]}
        return {**result, **extra, "samples": sample_states(store.reader, ids[:1000]),
                "classes": classes_with_keys()}

    @app.post("/api/classes/merge")
    def merge(request: MergeRequest):
        result = store.write(actions.merge_classes, request.sources, request.into,
                             queue=request.queue, author=who(request.author))
        return {**result, "classes": classes_with_keys()}

    @app.post("/api/classes/rename")
    def rename(request: RenameRequest):
        result = store.write(actions.merge_classes, [request.old], request.new,
                             queue=request.queue, author=who(request.author))
        return {**result, "classes": classes_with_keys()}

    @app.post("/api/plans/decide")
    def plan_decision(request: PlanDecisionRequest):
        result = store.write(plans.decide_item, request.plan, request.item, request.decision,
                             author=who(request.author), queue=request.queue)
        ids = _event_samples(store.reader, result["label_events"], result["mark_events"],
                             (), result.get("tag_events", ()))
        return {**result, "samples": sample_states(store.reader, ids[:1000]),
                "classes": classes_with_keys()}

    @app.post("/api/export")
    def export(request: ExportRequest):
        return store.write(actions.export_version, request.name, description=request.description)

    return app


def _changed(sample_id: str, row) -> StarletteHTTPException:
    return StarletteHTTPException(
        409, f"The image of sample {sample_id} ('{row['relpath']}') changed since it was "
             f"ingested; it is not served. Re-run 'smartset ingest' to take the new file in.")


def _check_local_file(sample_id: str, row, root: str, file: str) -> None:
    """Refuse a file that leaves its data root through a link, is no longer a regular
    file, or is not the file the catalog holds (size; content when the mtime moved)."""
    import stat as stat_module

    real_root, real = os.path.realpath(root), os.path.realpath(file)
    if os.path.commonpath([real_root, real]) != real_root:
        raise StarletteHTTPException(
            403, f"The image of sample {sample_id} ('{row['relpath']}') is a link that leaves "
                 f"the data root; it is not served. Replace the link with the file.")
    try:
        info = os.stat(real)
    except OSError:
        raise StarletteHTTPException(404, f"The image of sample {sample_id} is missing.") from None
    if not stat_module.S_ISREG(info.st_mode) or info.st_size != row["size"]:
        raise _changed(sample_id, row)
    if info.st_mtime_ns != row["mtime_ns"]:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != row["sha256"]:
            raise _changed(sample_id, row)


def _relpath(ws, sample_id: str) -> str | None:
    record = ws.records_of([sample_id]).get(sample_id)
    return None if record is None else record["relpath"]


def _with_file(message: str, sample_id: str, relpath: str | None) -> str:
    """``message`` naming the sample by its file: ``ID: accepted`` -> ``cat/x.png: accepted``;
    elsewhere the id is kept beside the file (``cat/x.png (ID)``)."""
    if not relpath or not isinstance(message, str):
        return message
    if message.startswith(f"{sample_id}:"):
        return relpath + message[len(sample_id):]
    if sample_id in message:
        return message.replace(sample_id, f"{relpath} ({sample_id})", 1)
    return f"{message} (image {relpath})"


def _event_samples(ws, label_events, mark_events, annotation_events=(),
                   tag_events=()) -> list[str]:
    from smartset.events import ANNOTATIONS, LABELS, MARKS
    from smartset.tags import TAGS

    ids: list[str] = []
    for log, events in ((LABELS, label_events), (MARKS, mark_events),
                        (ANNOTATIONS, annotation_events), (TAGS, tag_events)):
        ids += log.samples_of(ws.catalog, events)
    return list(dict.fromkeys(ids))

