"""The web app `serve` runs: one page for a clinic and an HTTP API for other programs, over
models loaded once. A standard ASGI application (Starlette), so any ASGI server runs it, with
as many worker processes as a site needs (docs/serve.md).

Uploads stay in memory: the multipart parser keeps files in memory up to the upload limit,
the image is decoded by retrain.data.images like every other image, and only counts and
timings are logged. `/api/classify` answers with label_image's JSON, written by the same
function (Classification.as_json)."""

from __future__ import annotations

import base64
import dataclasses
import hmac
import importlib.resources
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from retrain.card.markdown import model_card_sections
from retrain.data.images import ImageBytes
from retrain.errors import UserError
from retrain.json_text import dumps
from retrain.predict.classifier import Classifier
from retrain.predict.heatmaps import heatmap_png

LOG = logging.getLogger("retrain.serve")
DEFAULT_MAX_UPLOAD_MB = 20
MAX_UPLOAD_PIXELS = 50_000_000  # the largest phone photos; decoded, 150 MB each
TOKEN_COOKIE = "retrain_token"
# Only the page's own files: no inline script or style, nothing from another site.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}
FORM_FIELDS = {"image", "model", "heatmap", "top_k"}  # besides the model's patient metadata columns
_DRAWING = threading.Lock()  # matplotlib's pyplot, which draws heatmaps, is not thread-safe


@dataclass(frozen=True)
class ServedModel:
    """A model as the app serves it: its name in requests, and a lock, since a .tflite
    interpreter runs one image at a time."""

    name: str
    classifier: Classifier
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False)

    @property
    def metadata_columns(self) -> list[str]:
        encoding = self.classifier.model.patient_encoding
        return [] if encoding is None else encoding.column_names


class RequestError(Exception):
    """A bad request: its HTTP status and the one line the answer's `error` gives."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def model_names(classifiers: Sequence[Classifier]) -> list[str]:
    """Each model by its file name, or its whole path where two share a name."""
    names = [Path(c.model.source).name for c in classifiers]
    return [name if names.count(name) == 1 else c.model.source for name, c in zip(names, classifiers)]


def web_app(models: Sequence[Classifier], token: str | None = None,
            max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, wording: Callable[[str], str] = lambda text: text) -> Starlette:
    """The ASGI app serving `models` (from load; the first is the default): the page at `/`,
    `POST /api/classify`, `GET /api/models`, `GET /healthz`. With `token`, every request must
    carry it (`Authorization: Bearer TOKEN`, or the cookie the page sets from `/?token=TOKEN`).
    `max_upload_mb`: the largest request body accepted. `wording` rewrites the library's names in
    every answer (serve gives the command-line flags, as label_image says them)."""
    if not models:
        raise UserError("web_app.models: give at least one model")
    if max_upload_mb <= 0:
        raise UserError(f"web_app.max_upload_mb must be above 0, got {max_upload_mb:g}")
    if token is not None and not token.strip():
        raise UserError("web_app.token is empty; give a secret, or none to serve without one")
    served = {name: ServedModel(name, c) for name, c in zip(model_names(models), models)}
    limit = int(max_upload_mb * 1024 * 1024)
    folder = importlib.resources.files("retrain.api").joinpath("page")
    pages = {path: (folder.joinpath(name).read_bytes(), media_type) for path, (name, media_type) in PAGE_FILES.items()}

    async def page(request: Request) -> Response:
        content, media_type = pages[request.url.path]
        return Response(content, media_type=media_type)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": len(served)})

    async def list_models(request: Request) -> Response:
        return Response(dumps({"models": [describe(model) for model in served.values()], "max_upload_bytes": limit}),
                        media_type="application/json")

    async def classify(request: Request) -> Response:
        form = await read_form(request, limit)
        model = chosen(served, form)
        image, options = await request_inputs(model, form)
        result = await run_in_threadpool(classified, model, image, *options)
        return Response(wording(dumps(result)), media_type="application/json")

    routes = [Route(path, page) for path in PAGE_FILES] + [
        Route("/healthz", healthz), Route("/api/models", list_models),
        Route("/api/classify", classify, methods=["POST"])]
    async def error_answer(request: Request, error: Exception) -> Response:
        status = getattr(error, "status", None) or getattr(error, "status_code", 500)
        message = wording(str(error)) if isinstance(error, RequestError) else f"{request.method} {request.url.path}: " + (
            "no such page" if status == 404 else "method not allowed")
        return JSONResponse({"error": message}, status_code=status)

    return Starlette(routes=routes, middleware=[Middleware(_Guard, token=token)],
                     exception_handlers={RequestError: error_answer, 404: error_answer, 405: error_answer})


def describe(model: ServedModel) -> dict:
    """What the page and a client need to know of a served model: labels, inputs, its model card."""
    loaded, card = model.classifier.model, model.classifier.model_card
    encoding = loaded.patient_encoding
    return {
        "name": model.name,
        "labels": list(model.classifier.labels),
        "input_size": {"height": loaded.input_height, "width": loaded.input_width},
        "heatmap": loaded.class_activation_maps is not None,
        "patient_metadata": None if encoding is None else encoding.to_json()["columns"],
        "model_card": None if card is None else card.to_json(),
        "model_card_sections": [] if card is None else [{"title": title, "lines": lines}
                                                         for title, lines in model_card_sections(card)],
    }


async def read_form(request: Request, limit: int):
    """The multipart form, its files kept in memory; a body over `limit` is refused unread."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise RequestError(400, "send the image as multipart/form-data with a field 'image'")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the upload is {int(declared) / 1048576:.1f} MB; the limit is {limit / 1048576:g} MB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the upload is over the limit of {limit / 1048576:g} MB")
        chunks.append(chunk)
    if size == 0:
        raise RequestError(400, "empty request: send the image as multipart/form-data with a field 'image'")

    async def body():
        yield b"".join(chunks)

    parser = MultiPartParser(request.headers, body(), max_files=1, max_fields=20)
    parser.spool_max_size = limit + 1  # never rolled over to a temporary file on disk
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise RequestError(400, f"cannot read the form: {e}") from e


def chosen(served: dict[str, ServedModel], form) -> ServedModel:
    name = form.get("model")
    if name in (None, ""):
        return next(iter(served.values()))
    if name not in served:
        raise RequestError(400, f"model {str(name)!r}: not served here (served: {', '.join(served)})")
    return served[name]


async def request_inputs(model: ServedModel, form) -> tuple[ImageBytes, tuple]:
    """The uploaded image and (patient metadata text, heatmap wanted, top_k), checked."""
    columns = model.metadata_columns
    unknown = sorted(set(form.keys()) - FORM_FIELDS - set(columns))
    if unknown:
        takes = f"its patient metadata: {', '.join(columns)}" if columns else "no patient metadata"
        raise RequestError(400, f"unknown field {unknown[0]!r}: the form takes image, model, heatmap, top_k and "
                                f"{takes}")
    upload = form.get("image")
    if upload is None:
        raise RequestError(400, "no field 'image' in the form: send the image file as 'image'")
    if not isinstance(upload, UploadFile):
        raise RequestError(400, "the field 'image' is text, not a file: send the image file as 'image'")
    data = await upload.read()
    name = Path(upload.filename or "upload").name or "upload"
    if not data:
        raise RequestError(400, f"{name}: empty file (0 bytes)")
    values = {column: str(form.get(column)).strip() for column in columns if str(form.get(column) or "").strip()}
    if any("," in value or "=" in value for value in values.values()):
        raise RequestError(400, "a patient metadata value may not contain ',' or '='")
    metadata = ",".join(f"{column}={value}" for column, value in values.items()) or None
    top_k = str(form.get("top_k") or "5")
    if not top_k.isdigit() or int(top_k) < 1:
        raise RequestError(400, f"top_k {top_k!r}: give a whole number of at least 1")
    heatmap = str(form.get("heatmap") or "").lower() in ("1", "true", "yes", "on")
    return ImageBytes(name, data, MAX_UPLOAD_PIXELS), (metadata, heatmap, int(top_k))


def classified(model: ServedModel, image: ImageBytes, metadata: str | None, heatmap: bool, top_k: int) -> dict:
    """label_image's JSON for one image, with the lines label_image would print beside it
    (`lines`) and, when asked, the heatmap as a PNG data URL."""
    warnings: list[str] = []
    classifier = dataclasses.replace(model.classifier, warn=warnings.append)
    try:
        with model.lock:
            result = classifier(image, metadata, top_k)
            drawn, heatmap_error = None, None
            if heatmap:
                try:
                    drawn = classifier.heatmap(image, None, metadata)
                except UserError as e:
                    heatmap_error = str(e)
    except UserError as e:
        raise RequestError(400, in_form_words(str(e))) from e
    answer = dataclasses.replace(result, heatmap=drawn, heatmap_error=heatmap_error).as_json()
    if drawn is not None:
        with _DRAWING:
            png = heatmap_png(image, drawn)
        answer["heatmap"]["png"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    answer["model_name"] = model.name
    answer["lines"] = {"warnings": [in_form_words(line) for line in warnings], "ood": result.ood.message() if result.ood else "",
                       "decisions": result.decision_lines(), "notes": list(result.notes)}
    return answer


def in_form_words(message: str) -> str:
    """A library message as a user of the form reads it: the metadata fields, not the Python parameter."""
    return message.replace("Classifier.patient_metadata", "the patient metadata fields")


class _Guard:
    """Every answer with the security headers; with a token, every request checked for it
    first; one log line per request: its path, status and time, nothing of its content."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token
        self.count = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {}

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        request = Request(scope)
        if self.token is not None and not self._carries_token(request):
            response = self._token_answer(request)
            await response(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)
        self.count += 1
        LOG.info("request %d: %s %s %s in %.3f s", self.count, scope["method"], scope["path"], status.get("code"),
                 time.perf_counter() - started)

    def _carries_token(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
            request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _token_answer(self, request: Request) -> Response:
        """The page opened as /?token=TOKEN sets the cookie and drops the token from the address."""
        given = request.query_params.get("token", "")
        if request.url.path == "/" and given and hmac.compare_digest(given.encode(), self.token.encode()):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
            return response
        return JSONResponse({"error": "this server needs its token: send 'Authorization: Bearer TOKEN', or open "
                                      "the page as /?token=TOKEN"}, status_code=401)


_SECURITY_HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                     (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                     (b"cache-control", b"no-store")]
