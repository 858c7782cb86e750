"""The HTTP side: the page, and a small JSON API that the page and scripts share.

    GET  /                   the page
    GET  /api/info           the model (?model=NAME, else the default): resolution, scales, class names, defaults,
                             limits, example names, and the names of every model the server offers
    GET  /api/examples/NAME  a built-in example image (PNG) to edit
    POST /api/sample         JSON settings → the final images (base64 PNGs) and the command line
    POST /api/edit           JSON image + box or mask + settings → the edited image, the input as the model saw it
    POST /api/sample/stream  the same, as newline-delimited JSON events: queued (position), started, scales,
    POST /api/edit/stream    scale (that scale's images), then done (the result) or error

A request's `model` field picks the model (absent: the default). Bad input is refused before the job joins the
line: a 4xx and {"error": message}. A job whose client goes
away (a closed tab, a stopped script) leaves the line, or stops at its next scale.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import traceback
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..data.examples import EXAMPLE_SETS
from .inputs import MAX_BODY_BYTES, BadRequest
from .jobs import Job, Line
from .models import Models
from .session import Session, example_png

STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_WAITING = 32  # jobs in line (each holds its inputs in memory) before new ones are turned away


class JobStream(StreamingResponse):
    """A job's events as newline-delimited JSON; however the response ends (done, a client gone, the server
    stopping), an unfinished job is cancelled."""

    def __init__(self, line: Line, job: Job):
        self.line, self.job = line, job
        lines = (json.dumps(event) + "\n" async for event in line.events(job))
        super().__init__(lines, media_type="application/x-ndjson")

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.job.finished:
                self.line.cancel(self.job)


async def result_of(line: Line, job: Job, request: HTTPRequest) -> Response:
    """Waits for the job's result, cancelling it if the client goes away meanwhile."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return error("the client went away", 499)
                continue
            if event["event"] == "done":
                return JSONResponse({k: v for k, v in event.items() if k != "event"})
            if event["event"] == "error":
                return error(event["error"], event["status"])
    finally:
        if not job.finished:
            line.cancel(job)


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_json(request: HTTPRequest) -> dict:
    """The body as a JSON object, read no further than MAX_BODY_BYTES."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest("send the fields as JSON (Content-Type: application/json)", status=415)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(f"the request is over the {MAX_BODY_BYTES // 2**20} MB limit", status=413)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(f"the request is over the {MAX_BODY_BYTES // 2**20} MB limit", status=413)
    except ClientDisconnect:
        raise BadRequest("the client went away before the request was read") from None
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON ({e})") from None
    except RecursionError:
        raise BadRequest("the body is not valid JSON: nested too deeply") from None
    if not isinstance(fields, dict):
        raise BadRequest(f"the body must be a JSON object of fields, got {type(fields).__name__}")
    return fields


def create_app(models: Models | Session) -> Starlette:
    """The app for `models` (one `Session` alone: that model only). Every model's jobs share one line."""
    models = Models(models) if isinstance(models, Session) else models
    line = Line()
    page = resources.files(__package__).joinpath("static")
    static = {name: page.joinpath(name).read_bytes() for name in [*STATIC, "index.html"]}

    def endpoint(kind: str, stream: bool):
        def check(body: dict) -> tuple[Session, object]:
            session = models.get(body.get("model"))  # a model's first request loads it
            checked = session.sample_request if kind == "sample" else session.edit_request
            return session, checked(body, stream=stream)

        async def handle(request: HTTPRequest) -> Response:
            try:
                body = await read_json(request)
                # loading a model and decoding an upload take a while: off the event loop, so that other pages
                # keep streaming
                session, job_request = await run_in_threadpool(check, body)
            except BadRequest as e:
                return error(str(e), e.status)
            if len(line) > MAX_WAITING:
                return error(f"the server is busy: {len(line)} generations are waiting; try again later", 503)
            job = line.submit(lambda emit: session.run(job_request, emit))
            return JobStream(line, job) if stream else await result_of(line, job, request)

        return handle

    async def index(request: HTTPRequest) -> Response:
        return HTMLResponse(static["index.html"])

    async def asset(request: HTTPRequest) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPException(404, f"no such file: {name}")
        return Response(static[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def info(request: HTTPRequest) -> Response:
        try:
            session = await run_in_threadpool(models.get, request.query_params.get("model"))
        except BadRequest as e:
            return error(str(e), e.status)
        return JSONResponse({**session.info(), "models": models.names, "waiting": len(line)})

    async def example(request: HTTPRequest) -> Response:
        name = request.path_params["name"].removesuffix(".png")
        found = example_png(name)
        if found is None:
            known = [name for examples in EXAMPLE_SETS for name in examples.names]
            raise HTTPException(404, f"no example named {name!r}; there are: {', '.join(known)}")
        return Response(base64.b64decode(found), media_type="image/png")

    async def http_error(request: HTTPRequest, exc: HTTPException) -> Response:
        return error(exc.detail, exc.status_code)

    async def server_error(request: HTTPRequest, exc: Exception) -> Response:
        traceback.print_exception(exc, file=sys.stderr)
        return error(f"internal error: {type(exc).__name__}", 500)

    @asynccontextmanager
    async def lifespan(app):
        yield
        line.close()

    routes = [
        Route("/", index),
        Route("/static/{name}", asset),
        Route("/api/info", info),
        Route("/api/examples/{name}", example),
        Route("/api/sample", endpoint("sample", stream=False), methods=["POST"]),
        Route("/api/sample/stream", endpoint("sample", stream=True), methods=["POST"]),
        Route("/api/edit", endpoint("edit", stream=False), methods=["POST"]),
        Route("/api/edit/stream", endpoint("edit", stream=True), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan
    )
    app.state.line, app.state.models = line, models
    return app
