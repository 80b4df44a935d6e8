"""`serve`: a page for a clinic and an HTTP API over exported models, loaded once (retrain.api.web_app
run by uvicorn)."""

from __future__ import annotations

import ipaddress
import socket

import click

from retrain.cli.console import echo, reports_user_errors, warn
from retrain.cli.fields import Field, in_flags, register
from retrain.cli.options import PATH, option
from retrain.errors import UserError

GRAPHS_VARIABLE, TOKEN_VARIABLE, UPLOAD_VARIABLE = "RETRAIN_SERVE_GRAPHS", "RETRAIN_SERVE_TOKEN", "RETRAIN_SERVE_MAX_UPLOAD_MB"

# Each flag and the parameter of retrain.api.load or web_app it sets; --host and --port are uvicorn's.
FIELDS = register(
    Field("graph", "load", "path"), Field("graph", "web_app", "models"),
    *(Field(flag, "web_app", flag) for flag in ("token", "max_upload_mb")),
    *(Field(flag, "serve", flag) for flag in ("host", "port")),
)
DEFAULT_PORT = 8000


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["graph"], type=PATH, multiple=True, required=True,
        help="A model to serve: frozen .pb, SavedModel folder or .tflite; repeatable (the first is the default).")
@option(FIELDS["host"], default="127.0.0.1", show_default=True,
        help="Address to listen on; anything but localhost serves the network, so give --token.")
@option(FIELDS["port"], type=int, default=DEFAULT_PORT, show_default=True)
@option(FIELDS["token"], default=None, envvar=TOKEN_VARIABLE,
        help=f"A secret every request must carry (Authorization: Bearer TOKEN; the page: open /?token=TOKEN once) "
             f"[default: ${TOKEN_VARIABLE}, else none].")
@option(FIELDS["max_upload_mb"], type=float, default=20.0, show_default=True,
        help="The largest upload accepted, in megabytes.")
@reports_user_errors
def serve(graph, host, port, token, max_upload_mb):
    """Serve a page to classify photos, on a phone or a desktop, and an HTTP API (POST /api/classify,
    GET /api/models, GET /healthz): images are processed in memory, never stored."""
    check_flags(graph, host, port, token, max_upload_mb)
    try:
        import uvicorn
        from retrain.api.web import web_app
    except ImportError as e:
        raise UserError(f"serve needs the web packages ({e.name} is missing): python -m pip install -e .") from e
    from retrain.api.classification import load
    from retrain.reporter import Reporter

    if not is_local(host) and token is None:
        warn(f"--host {host} serves the network with no authentication: anyone who reaches this machine can "
             "use the model; give --token")
    models = [load(path, reporter=Reporter(warn=warn)) for path in graph]
    app = web_app(models, token, max_upload_mb, _in_flags)
    _log_requests()
    shown = f"[{host}]" if ":" in host else host
    echo(f"Serving {len(models)} model{'s' if len(models) > 1 else ''} at http://{shown}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def check_flags(graph, host: str, port: int, token: str | None, max_upload_mb: float) -> None:
    """Everything that can be wrong before the (slow) loading, one line each."""
    for path in graph:
        if not path.expanduser().exists():
            raise UserError(f"load.path {path}: no such file or directory")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: give a port from 1 to 65535")
    if max_upload_mb <= 0:
        raise UserError(f"web_app.max_upload_mb must be above 0, got {max_upload_mb:g}")
    if token is not None and not token.strip():
        raise UserError("web_app.token is empty; give a secret, or none to serve without one")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: not an address of this machine ({e})") from e
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise UserError(f"--port {port} on {host}: cannot listen there ({e.strerror or e})") from e


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_requests() -> None:
    """The app's one line per request (path, status, time: nothing of what was sent) on stderr."""
    import logging

    logger = logging.getLogger("retrain.serve")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _in_flags(text: str) -> str:
    """An answer as label_image --json words it: the flags, not the library's names."""
    from retrain.api.web import in_form_words

    return in_flags(in_form_words(text))


def app_from_environment():
    """The app for a server that starts it in each of its worker processes (uvicorn's factory
    mode with several workers, gunicorn; docs/serve.md gives the command lines): the models from
    $RETRAIN_SERVE_GRAPHS (paths separated by the platform's path separator, ':' on Linux),
    the token from $RETRAIN_SERVE_TOKEN, the upload limit from $RETRAIN_SERVE_MAX_UPLOAD_MB."""
    import os
    from pathlib import Path

    from retrain.api.classification import load
    from retrain.api.web import DEFAULT_MAX_UPLOAD_MB, web_app

    graphs = [path for path in os.environ.get(GRAPHS_VARIABLE, "").split(os.pathsep) if path]
    if not graphs:
        raise UserError(f"${GRAPHS_VARIABLE} is not set: give the model files to serve, separated by {os.pathsep!r}")
    limit = os.environ.get(UPLOAD_VARIABLE, str(DEFAULT_MAX_UPLOAD_MB))
    try:
        max_upload_mb = float(limit)
    except ValueError as e:
        raise UserError(f"${UPLOAD_VARIABLE} {limit!r}: not a number of megabytes") from e
    return web_app([load(Path(graph)) for graph in graphs], os.environ.get(TOKEN_VARIABLE) or None, max_upload_mb,
                   _in_flags)
