"""Workers through Optuna's gRPC storage proxy (`grpc://HOST:PORT`), with the heartbeat that finds dead workers.

Many workers on PostgreSQL each hold their own database connections (PostgreSQL allows 100 by default); the
proxy (`hpo proxy`, hpo.tools.proxy) holds one pool for all of them and serves Optuna's storage calls over
gRPC. Optuna's client, GrpcStorageProxy, has no heartbeat (checked against optuna 5.1.0), so a worker killed
mid-trial would leave its trial RUNNING for good. ProxyStorage adds one with nothing but the proxy's public
storage calls:

- beat: while a trial runs, Optuna's own heartbeat thread (started for any storage that is a Heartbeat)
  calls `record_heartbeat`, which rewrites the trial's system attribute `hpo:heartbeat` (a counter);
- stale: a reader (each worker before each trial and while it waits, the parent of --workers every second)
  remembers when it first saw each running trial's beat take its current value, by its own clock; a beat
  that has not changed for longer than the grace period is a dead worker's. No clocks are compared across
  machines. A trial killed before its first beat has no beat at all, which goes stale the same way.
  `optuna.storages.fail_stale_trials` then fails it, and the retry callback re-enqueues its parameters, exactly
  as with RDBStorage's heartbeat table.

A reader that starts after a worker died needs one grace period of watching before it can call the trial
stale. All workers of one study go through the proxy or none do: a direct RDBStorage reader sees the
proxy's running trials without rows in its heartbeat table.

Optuna's heartbeat interface is private; this module reaches it only through hpo.optuna_private.Heartbeat
(tests/test_proxy.py fails when an upgrade changes it).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
import warnings
from collections.abc import Callable
from urllib.parse import urlsplit

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import GrpcStorageProxy
from optuna.trial import FrozenTrial, TrialState

from hpo import optuna_private
from hpo.errors import StudyError
from hpo.optuna_private import Heartbeat

SCHEME = "grpc://"
BEAT_KEY = "hpo:heartbeat"
DEFAULT_PORT = 13000  # Optuna's run_grpc_proxy_server default


def parse_grpc_url(url: str) -> tuple[str, int]:
    """(host, port) of grpc://HOST:PORT (port optional: 13000); a bad URL is a one-line StudyError."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        host = None
    if not host or parts.path.strip("/"):
        raise StudyError(f"storage {url}: expected grpc://HOST:PORT, e.g. grpc://127.0.0.1:{DEFAULT_PORT}")
    return host, port


class ProxyStorage(GrpcStorageProxy, Heartbeat):
    """Optuna's gRPC proxy client with a heartbeat (see the module docstring). `interval` None: no heartbeat
    (readers such as export and the dashboard)."""

    def __init__(self, *, host: str, port: int, interval: int | None = None, grace: int | None = None,
                 callback: Callable[[optuna.Study, FrozenTrial], None] | None = None):
        super().__init__(host=host, port=port)
        self.interval, self.grace, self.callback = interval, grace, callback
        self._beats = itertools.count(1)
        self._seen: dict[int, dict[int, tuple[object, float]]] = {}  # study id -> trial id -> (beat, first seen)
        self._lock = threading.Lock()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, BEAT_KEY, next(self._beats))
        except UpdateFinishedTrialError:
            pass  # failed as stale by another reader meanwhile; this worker's tell will find that out

    def stale_trial_ids(self, study_id: int) -> list[int]:
        if self.grace is None:
            return []
        now = time.monotonic()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        with self._lock:
            before = self._seen.get(study_id, {})
            seen, stale = {}, []
            for t in running:
                beat = t.system_attrs.get(BEAT_KEY)
                last = before.get(optuna_private.trial_id(t))
                seen[optuna_private.trial_id(t)] = last if last is not None and last[0] == beat else (beat, now)
                if now - seen[optuna_private.trial_id(t)][1] > self.grace:
                    stale.append(optuna_private.trial_id(t))
            self._seen[study_id] = seen
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.interval

    def get_heartbeat_stale_trial_callback(self):
        return self.callback

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        del state["_beats"], state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        state["_beats"], state["_lock"] = itertools.count(1), threading.Lock()
        super().__setstate__(state)


def open_proxy(url: str, interval: int | None, grace: int | None, callback, timeout: float = 10) -> ProxyStorage:
    """A ProxyStorage on grpc://HOST:PORT once the proxy answers; a proxy that is not there is one line."""
    host, port = parse_grpc_url(url)
    start = f"start it with `hpo proxy --storage postgresql://... --host {host} --port {port}`"
    try:  # nothing listening is known at once; gRPC's own wait would retry for the whole timeout
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise StudyError(f"cannot open storage {url}: no proxy listens on {host}:{port}; {start}") from None
    except OSError:
        pass  # a slow or filtered network: gRPC's wait decides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = ProxyStorage(host=host, port=port, interval=interval, grace=grace, callback=callback)
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError:
        storage.close()
        raise StudyError(f"cannot open storage {url}: no proxy answered in {timeout:.0f}s; {start}") from None
    return storage
