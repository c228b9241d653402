"""Where results come from: the repository root, the package versions and the git commit.

Studies, exports, comparisons and benchmarks record these beside their numbers (STYLE.md, lesson 8).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository (studies/, search_spaces/, BENCHMARKS.md)


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


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("hpo", "optuna", "torch", "optuna-dashboard", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
