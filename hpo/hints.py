"""What to tell a person to run next: hpo as the shell finds it, the `make` form under make, the dashboard's
address and how to open it on a study's storage. Printed by `hpo study` and in the one-line errors of the
readers (export, compare, report)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from hpo.provenance import ROOT
from hpo.urls import DEFAULT_STORAGE, redact, sqlite_path


def hpo_command() -> str:
    """How to call this hpo from the working directory: `hpo` when the shell finds this very one on its PATH
    (the venv is active), else the path of this environment's script (`.venv/bin/hpo` from the repository),
    so that a printed hint can be pasted into a fresh shell as it is."""
    here = Path(sys.executable).parent / "hpo"
    found = shutil.which("hpo")
    if not here.is_file() or (found and Path(found).resolve() == here.resolve()):
        return "hpo"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def command_hint(args: str, make: str | None = None) -> str:
    """A command to suggest: its `make` form when hpo runs under make (the Makefile exports HPO_MAKE), so that
    the hint matches what the user typed; else `hpo ARGS` as hpo_command() spells it."""
    if make and os.environ.get("HPO_MAKE"):
        return f"make {make}"
    return f"{hpo_command()} {args}"


# --- watching a study ------------------------------------------------------------------------

DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8080


def dashboard_address(host: str, port: int) -> str:
    """The URL a browser opens; a wildcard bind is reached through loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard"


def sqlite_path_from(url: str, base: Path) -> Path | None:
    """The file a SQLite URL names, a relative one taken from `base` (not the working directory); None for
    other storages."""
    path = sqlite_path(url)
    return path if path is None or path.is_absolute() else base / path


def describe_storage(url: str) -> str:
    """A storage URL for people: a relative SQLite path also in full when it is not the repository's own
    runs/hpo.db, so that a study run from another folder says where its new file is."""
    here = sqlite_path_from(url, Path.cwd())
    if here is None or sqlite_path(url).is_absolute() or Path.cwd().resolve() == ROOT:
        return redact(url)
    return f"{redact(url)} (that is {here.resolve()}, under this folder, not the repository's runs/)"


def dashboard_hint(url: str) -> str:
    """How to watch a study on `url`, for `hpo study` to print. `make dashboard` runs in the repository with
    $HPO_STORAGE or runs/hpo.db there, so it is the hint only when that is this study's storage; from another
    folder a relative SQLite path names another file, and the hint spells it out in full."""
    opened_by_make = os.environ.get("HPO_STORAGE") or DEFAULT_STORAGE
    here, there = sqlite_path_from(url, Path.cwd()), sqlite_path_from(opened_by_make, ROOT)
    same = here.resolve() == there.resolve() if here and there else url == opened_by_make
    address = dashboard_address(DASHBOARD_HOST, DASHBOARD_PORT)
    if same and Path.cwd().resolve() == ROOT:
        return f"watch live: `make dashboard`, then open {address}"
    full = f"sqlite:///{here.resolve()}" if here else url
    return f"watch live: `{hpo_command()} dashboard --storage {redact(full)}`, then open {address}"
