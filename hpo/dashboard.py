"""`hpo dashboard`: optuna-dashboard on the project's storage.

optuna-dashboard's WSGI app behind a threaded wsgiref server (what its own CLI runs), bound to
127.0.0.1 unless --host says otherwise: the dashboard has no login and can rename and delete studies.
What it shows comes from the trials themselves: validation accuracy per epoch as intermediate values,
the user attributes the objective records (config, outcome, reason, time, samples per second, baseline)
and the study's metric names.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpo.errors import StudyError
from hpo.study import DEFAULT_STORAGE, open_storage, redact, storage_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open browser tab must not keep Ctrl-C from ending the server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass  # the dashboard polls every few seconds; a line per request would bury everything else


def address(host: str, port: int) -> str:
    """The URL a browser opens; a wildcard bind is reached through loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard"


def hint(url: str) -> str:
    """How to watch a study on `url`, for `hpo study` to print."""
    if url == DEFAULT_STORAGE or url == os.environ.get("HPO_STORAGE"):
        return f"watch live: `make dashboard`, then open {address(DEFAULT_HOST, DEFAULT_PORT)}"
    return f"watch live: `hpo dashboard --storage {redact(url)}`, then open {address(DEFAULT_HOST, DEFAULT_PORT)}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///"):])
    return None


def make_app(url: str):
    """optuna-dashboard's WSGI app on `url`, and the number of studies there."""
    import optuna_dashboard  # imported here: only this command needs it

    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StudyError(f"{path}: no such storage yet; run a study first (make study NAME=...) or pass --storage")
    storage = open_storage(url, heartbeat=False)  # with the SQLite tuning: it waits for workers, never fails on them
    return optuna_dashboard.wsgi(storage), len(storage.get_all_studies())


def serve(storage: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, echo=print) -> None:
    """Serve until Ctrl-C."""
    if not 0 <= port <= 65535:
        raise StudyError(f"--port: expected 0..65535, but got {port}")
    url = storage_url(storage, mkdir=False)
    app, n_studies = make_app(url)
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as e:
        raise StudyError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None
    with server:
        echo(f"optuna-dashboard on {redact(url)} ({n_studies} {'study' if n_studies == 1 else 'studies'}): "
             f"open {address(host, server.server_port)}  (Ctrl-C stops)")
        if not is_loopback(host):
            echo(f"warning: listening on {host}: anyone who can reach this machine can see, rename and delete "
                 f"studies; the dashboard has no login")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            echo("dashboard stopped")
