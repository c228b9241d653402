"""`hpo dashboard`: optuna-dashboard on the project's storage.

optuna-dashboard's WSGI app behind a threaded wsgiref server (what its own CLI runs), bound to
127.0.0.1 unless --host says otherwise: the dashboard has no login and can rename and delete studies.
What it shows comes from the trials themselves: validation accuracy per epoch as intermediate values,
the user attributes the objective records (config, outcome, reason, time, samples per second, baseline)
and the study's metric names; the notes hpo writes (a trial's in words, the study's best so far or its
comparison with the paper: hpo.results.notes) and the pictures in the artifact folder, which is served too.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from hpo.errors import StudyError
from hpo.hints import DASHBOARD_HOST, DASHBOARD_PORT, dashboard_address
from hpo.results.notes import ARTIFACTS_ENV, artifact_dir
from hpo.search.storage import open_storage
from hpo.urls import redact, sqlite_path, storage_url

DEFAULT_HOST, DEFAULT_PORT = DASHBOARD_HOST, DASHBOARD_PORT


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an open browser tab must not keep Ctrl-C from ending the server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass  # the dashboard polls every few seconds; a line per request would bury everything else


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_artifact_dir(url: str, arg: str | None = None) -> Path | None:
    """The folder of pictures to serve: --artifacts / $HPO_ARTIFACT_STORE must name an existing folder (a typo
    would otherwise show every picture as missing); the default one beside a SQLite file is served when it exists."""
    path = artifact_dir(url, arg)
    if path is None or (not path.is_dir() and arg is None and not os.environ.get(ARTIFACTS_ENV)):
        return None
    if not path.is_dir():
        raise StudyError(f"{path}: no such artifact folder; `hpo study` and `hpo compare` make it (pass the same "
                         f"--artifacts to them)")
    return path


def make_app(url: str, artifacts: str | None = None):
    """optuna-dashboard's WSGI app on `url` (serving the artifact folder's pictures), the number of studies
    there, and the artifact folder (None: none)."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise StudyError(f"{path}: no such storage yet; run a study first (make study NAME=...) or pass --storage")
    pictures = served_artifact_dir(url, artifacts)
    store = FileSystemArtifactStore(pictures) if pictures is not None else None
    storage = open_storage(url, heartbeat=False)  # with the SQLite tuning: it waits for workers, never fails on them
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    return app, len(storage.get_all_studies()), pictures


def serve(storage: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          artifacts: str | None = None, echo=print) -> None:
    """Serve until Ctrl-C."""
    if not 0 <= port <= 65535:
        raise StudyError(f"--port: expected 0..65535, but got {port}")
    url = storage_url(storage, mkdir=False)
    app, n_studies, folder = make_app(url, artifacts)
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as e:
        raise StudyError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None
    with server:
        echo(f"optuna-dashboard on {redact(url)} ({n_studies} {'study' if n_studies == 1 else 'studies'}): "
             f"open {dashboard_address(host, server.server_port)}  (Ctrl-C stops)")
        echo(f"pictures from {folder}" if folder else
             f"no artifact folder{' beside ' + str(sqlite_path(url)) if sqlite_path(url) else ''} yet: notes without "
             f"pictures (pass --artifacts PATH for a storage other than SQLite)")
        if not is_loopback(host):
            echo(f"warning: listening on {host}: anyone who can reach this machine can see, rename and delete "
                 f"studies; the dashboard has no login")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            echo("dashboard stopped")
