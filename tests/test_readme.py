"""The README stays true where that is cheap to check: every `make` target, every shipped study, every
grammar key is in it; and `make study NAME` without `NAME=` stops before anything runs."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from hpo.provenance import ROOT
from hpo.search.space import PARAMS

README = (ROOT / "README.md").read_text()
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


@needs_make
def test_every_make_target_and_its_help_line_is_in_the_readme():
    listed = _make("help").stdout.splitlines()
    targets = [line.split()[1] for line in listed if line.startswith("  make ")]
    assert {"study", "reproduce", "report", "compare", "test"} <= set(targets)
    for line in listed:  # the README's copy of `make help` is the real one
        assert line in README, f"README lacks this `make help` line: {line!r}"
    for target in targets:
        assert f"make {target}" in README


def test_every_shipped_study_is_in_the_studies_table():
    table = README.split("## Shipped studies")[1].split("\n## ")[0]
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        assert f"| `{path.stem}` |" in table, f"the shipped-studies table lacks {path.stem}"


def test_every_grammar_key_is_in_the_closed_list():
    closed = re.search(r"The set of names is\s+closed: `([^`]+)`", README)
    assert closed, "README: the closed list of space keys is gone"
    assert set(closed.group(1).split()) == set(PARAMS)


@needs_make
def test_a_study_name_without_name_equals_stops_with_one_line():
    r = _make("-n", "study", "relu3adam")  # -n: were the guard broken, make would print the study, not run it
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "write `make study NAME=relu3adam`" in err[0], r.stderr
