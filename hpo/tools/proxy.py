"""`hpo proxy`: Optuna's gRPC storage proxy in front of a PostgreSQL (or SQLite) storage.

Workers, `hpo study`, export, compare, report and the dashboard then take `--storage grpc://HOST:PORT` and
share the proxy's connection pool instead of each holding its own (hpo.search.proxy has the client and its
heartbeat). The proxy keeps no state of its own: a proxy stopped and started again loses nothing, and the
workers' calls fail while it is away. It has no login and talks plain gRPC: bind it to loopback or a private
network (127.0.0.1 unless --host says otherwise).
"""

from __future__ import annotations

import socket
import warnings
from concurrent.futures import ThreadPoolExecutor

import optuna
from optuna.storages import get_storage, run_grpc_proxy_server

from hpo.errors import StudyError
from hpo.search.proxy import DEFAULT_PORT
from hpo.search.storage import open_storage
from hpo.urls import redact, storage_url

DEFAULT_HOST = "127.0.0.1"
THREADS = 16  # concurrent calls served; each holds a database connection while it runs


def serve(storage: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, threads: int = THREADS,
          echo=print) -> None:
    """Serve until Ctrl-C."""
    url = storage_url(storage)
    if url.startswith("grpc://"):
        raise StudyError(f"--storage: the proxy serves a database, not another proxy ({url})")
    if not 0 < port <= 65535:
        raise StudyError(f"--port: expected 1..65535, but got {port}")
    if threads < 1:
        raise StudyError(f"--threads: must be a positive number, but got {threads}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:  # gRPC would only log a port it cannot bind; say so in one line instead
            s.bind((host, port))
        except OSError as e:
            raise StudyError(f"cannot listen on {host}:{port}: {e.strerror or e}; "
                             "pick another --port or --host") from None
    # The heartbeat's table is not used through the proxy: its clients beat through trial attributes.
    rdb = open_storage(url, heartbeat=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    echo(f"storage proxy for {redact(url)} on grpc://{host}:{port} ({threads} threads); point workers at it with "
         f"--storage grpc://{host}:{port}  (Ctrl-C stops)")
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # get_storage adds Optuna's cache of finished trials, as run_grpc_proxy_server's documentation asks.
            run_grpc_proxy_server(get_storage(rdb), host=host, port=port, thread_pool=pool)
    except KeyboardInterrupt:
        echo("proxy stopped")
    finally:
        # Calls still running (a worker's long poll, a killed worker's half-done call) are dropped, not awaited:
        # the proxy keeps no state, and the workers' next calls fail until it is back.
        pool.shutdown(wait=False, cancel_futures=True)
        rdb.engine.dispose()
