"""Naming a storage: the URL to use (--storage, $HPO_STORAGE or the default), the file a SQLite URL names,
and a URL fit to print (no password). Nothing here opens a storage (hpo.search.storage does), so that the
ground floor (hints, notes) can name one without importing Optuna's storages."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hpo.errors import StudyError

DEFAULT_STORAGE = "sqlite:///runs/hpo.db"


def storage_url(arg: str | None = None, mkdir: bool = True) -> str:
    """The storage URL to use; readers (export, compare) pass mkdir=False so that they create nothing."""
    url = arg or os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    if "://" not in url:  # a bare path: SQLAlchemy would say only "Could not parse SQLAlchemy URL"
        where = "--storage" if arg else "HPO_STORAGE"
        raise StudyError(f"{where}: {url!r} is not a storage URL; for a SQLite file write sqlite:///{url} "
                         f"(relative) or sqlite:////absolute/path.db")
    path = sqlite_path(url)
    if mkdir and path is not None and not path.is_absolute():
        # Relative SQLite paths are relative to the working directory; make the folder.
        path.parent.mkdir(parents=True, exist_ok=True)
    return url


def sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite URL as SQLAlchemy reads it (a relative path from the working directory); None for
    another storage or an in-memory database."""
    try:
        parsed = make_url(url)
    except (ArgumentError, TypeError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password is not None else url
