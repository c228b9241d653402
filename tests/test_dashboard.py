"""`hpo dashboard`: optuna-dashboard on the project's storage, checked in a real headless browser.

The browser test populates a small storage with a tiny study through the real objective, serves it with
`hpo dashboard --port 0`, and has Debian's chromium render the study list and a study's trials. Screenshots
are kept under $HPO_ARTIFACTS (default: artifacts/ at the repository root).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from html import unescape
from pathlib import Path

import pytest
from conftest import write_tiny_idx
from rich.console import Console
from studyfiles import ROOT, hpo_command, write_study

from hpo import data as data_mod
from hpo.cli import build_parser, main
from hpo.hints import dashboard_address as address
from hpo.hints import dashboard_hint as hint
from hpo.hints import describe_storage
from hpo.search.storage import open_storage
from hpo.urls import DEFAULT_STORAGE, sqlite_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def artifacts() -> Path:
    d = Path(os.environ.get("HPO_ARTIFACTS") or ROOT / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_hint_names_the_command_and_the_address(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("HPO_STORAGE")  # what `make dashboard` opens: runs/hpo.db in the repository
    assert hint(DEFAULT_STORAGE) == "watch live: `make dashboard`, then open http://127.0.0.1:8080/dashboard"
    assert "hpo dashboard --storage postgresql://u:***@db.lan/hpo`" in hint("postgresql://u:pw@db.lan/hpo")
    # From another folder the same relative URL is another file: the hint names that file, not `make dashboard`.
    monkeypatch.chdir(tmp_path)
    assert f"hpo dashboard --storage sqlite:///{tmp_path.resolve()}/runs/hpo.db`" in hint(DEFAULT_STORAGE)
    assert f"(that is {tmp_path.resolve()}/runs/hpo.db, under this folder" in describe_storage(DEFAULT_STORAGE)
    monkeypatch.chdir(ROOT)
    assert describe_storage(DEFAULT_STORAGE) == DEFAULT_STORAGE
    assert address("0.0.0.0", 9000) == "http://127.0.0.1:9000/dashboard"
    assert address("::1", 9000) == "http://[::1]:9000/dashboard"


def test_binds_to_loopback_unless_told():
    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_a_missing_storage_is_one_line_and_creates_nothing(tmp_path, capsys):
    db = tmp_path / "none" / "hpo.db"
    assert main(["dashboard", "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hpo: error: {db}: no such storage yet; run a study first (make study NAME=...) or pass --storage"]
    assert not db.parent.exists()


def test_a_busy_port_is_one_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    open_storage(url, heartbeat=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", "--storage", url, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hpo: error: cannot listen on 127.0.0.1:{port}: ")


# --- in the browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A storage holding one tiny study: three trials (the paper's baselines) of two epochs each, each with its
    note and curve picture, compared on the test set (one seed, one epoch; compare.json in out/ beside the
    storage): the comparison is the study's note. Built once for the module: the tests only read it."""
    from hpo.api import run_study
    from hpo.results.compare import compare_study

    root = tmp_path_factory.mktemp("populated")
    url = f"sqlite:///{root / 'hpo.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HPO_DATA_DIR", str(write_tiny_idx(root / "data" / "mnist", gz=False).parent))
        env.setenv("HPO_CACHE_DIR", str(root / "cache"))
        env.setenv("HPO_STORAGE", url)
        data_mod._LOADED.clear()
        run_study(str(write_study(root, n_trials=3, epochs=2)), storage=url, console=Console(file=io.StringIO()))
        compare_study("tiny", seeds=1, epochs=1, references=False, out=root / "out", storage=url,
                      console=Console(file=io.StringIO()))
        data_mod._LOADED.clear()
    return url


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output from {proc.args} within {timeout}s")
    return proc.stdout.readline()


@pytest.fixture(scope="module")
def dashboard(populated):
    """`hpo dashboard` on a free loopback port, one server for the module's browser tests (they only read);
    yields its base URL; stopped as Ctrl-C would."""
    proc = subprocess.Popen(hpo_command("dashboard", "--port", "0", "--storage", populated), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = _first_line(proc, 60)
        m = re.search(r"open (http://127\.0\.0\.1:\d+)/dashboard", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        assert "(1 study)" in line
        folder = sqlite_path(populated).parent / "artifacts"
        # Printed right after the first line (perhaps read into the pipe's buffer with it: no select here).
        assert proc.stdout.readline().strip() == f"pictures from {folder}"  # beside the SQLite file, unasked
        yield m.group(1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "dashboard stopped" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def chromium(url: str, *args: str, timeout: float = 90) -> str:
    """Run headless chromium on `url`; returns its stdout. Every process it starts is killed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hpo-chromium-") as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, url]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # renderer and zygote processes too
            except ProcessLookupError:
                pass
            proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out


def text_of(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_the_dashboard_lists_studies_and_shows_trials_in_a_browser(dashboard, populated):
    study_id = open_storage(populated, heartbeat=False).get_study_id_from_name("tiny")

    home = text_of(chromium(f"{dashboard}/dashboard", "--dump-dom"))
    assert "tiny" in home and "MAXIMIZE" in home.upper()

    history = text_of(chromium(f"{dashboard}/dashboard/studies/{study_id}", "--dump-dom"))
    assert "val_accuracy" in history  # the metric name the study sets

    trials = text_of(chromium(f"{dashboard}/dashboard/studies/{study_id}/trials", "--dump-dom"))
    for n in range(3):
        assert f"Trial {n}" in trials
    # What the objective recorded is there: per-epoch validation accuracy, the outcome, the baseline tag.
    assert "Intermediate Values" in trials
    assert "val_curve" in trials and "outcome complete" in trials and "samples_per_sec" in trials
    assert "baseline T3 784-50-30-10 adam lr=0.001" in trials

    for page, name in ((f"studies/{study_id}", "dashboard-study.png"),
                       (f"studies/{study_id}/trials", "dashboard-trials.png")):
        shot = artifacts() / name
        shot.unlink(missing_ok=True)
        chromium(f"{dashboard}/dashboard/{page}", f"--screenshot={shot}", "--window-size=1280,900")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def _images(dom: str) -> list[str]:
    return re.findall(r'<img[^>]*\bsrc="([^"]+)"', dom)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return r.read()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_the_dashboard_shows_the_notes_and_pictures_in_a_browser(dashboard, populated):
    """The study page holds the comparison with the report's pictures, a trial page its note and curve (issue 11)."""
    findings = json.loads((sqlite_path(populated).parent / "out" / "compare.json").read_text())["findings"]
    storage = open_storage(populated, heartbeat=False)
    study_id = storage.get_study_id_from_name("tiny")
    trial = storage.get_all_trials(study_id)[0]

    dom = chromium(f"{dashboard}/dashboard/studies/{study_id}/note", "--dump-dom")
    note = text_of(dom)
    assert "tiny: automated search against the hand-tuned configurations" in note
    for words in ("Test-set comparison: mnist, seeds [0]", "paper config re-run", "automated optimum", "difference",
                  "What the numbers say", *findings, "Protocol assumptions", "Search-space boundaries"):
        assert " ".join(words.split()) in note, words
    pictures = [src for src in _images(dom) if src.startswith(f"/artifacts/{study_id}/")]
    assert len(pictures) >= 3, _images(dom)  # history, params, curves (and importances when drawn)
    for src in pictures:  # served from the artifact folder, as the browser loads them
        assert _fetch(dashboard + src)[:8] == b"\x89PNG\r\n\x1a\n"

    dom = chromium(f"{dashboard}/dashboard/studies/{study_id}/trials?numbers=0", "--dump-dom")
    page = text_of(dom)
    assert "Trial 0: complete" in page and "Validation accuracy" in page and "after 2 epochs" in page
    assert f"Paper baseline {trial.user_attrs['baseline']} (Youn & Hong 2024, Table 3): the paper reports" in page
    curve = [src for src in _images(dom) if src.startswith(f"/artifacts/{study_id}/{trial._trial_id}/")]
    assert curve, _images(dom)  # in the note and in the trial's artifact list
    assert _fetch(dashboard + curve[0])[:8] == b"\x89PNG\r\n\x1a\n"

    history = text_of(chromium(f"{dashboard}/dashboard/studies/{study_id}", "--dump-dom"))
    assert "tiny: accuracy against parameter count" in history  # the plotly chart hpo saved

    for page, name, height in ((f"studies/{study_id}/note", "dashboard-note.png", 2400),
                               (f"studies/{study_id}/trials?numbers=0", "dashboard-trial-note.png", 1300)):
        shot = artifacts() / name
        shot.unlink(missing_ok=True)
        chromium(f"{dashboard}/dashboard/{page}", f"--screenshot={shot}", f"--window-size=1280,{height}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 50_000  # a rendered page with pictures, not a blank one
