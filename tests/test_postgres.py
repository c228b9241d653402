"""Workers on PostgreSQL: processes started independently with `hpo study NAME --storage postgresql://...`
join one study, as workers on several machines do, and together run exactly n_trials.

The test starts its own throwaway cluster (Debian's postgresql, which .ci/run installs) on a free loopback
port, with trust authentication on loopback only, and stops it at the end. It is skipped, saying why,
only where no server can be started.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from studyfiles import ROOT, assert_no_duplicate_baselines, count, hpo_command, load, run_hpo, write_study

from hpo.trials import study_attrs


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl) here: apt-get install postgresql")
    run_as: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="hpo-pg-"))  # not under pytest's tmp: the postgres user must reach it
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(tmp)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, log, port = tmp / "data", tmp / "server.log", _free_port()

    def pg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=timeout, check=True)

    def stop() -> None:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale",
           "--no-sync")
        # Loopback only, its socket in the temp dir; durability off: a throwaway cluster.
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
           f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off", "start",
           timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = _last_line(getattr(e, "stderr", None) or (log.read_text() if log.is_file() else "") or str(e))
        stop()
        pytest.skip(f"cannot start a PostgreSQL server: {detail}")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        conn.cursor().execute("CREATE DATABASE hpo")
        conn.close()
    except BaseException:
        stop()
        raise
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/hpo"
    finally:
        stop()


@pytest.mark.parametrize("pack", [1, 3], ids=["one-at-a-time", "packs-of-3"])
def test_workers_started_separately_share_one_study(tiny_mnist, tmp_path, postgres_url, pack):
    """Two workers started at the same moment on an empty database, as a job array would: one creates the
    study and enqueues the paper's baselines, the other joins it, and together they run exactly n_trials
    (also when each trains its trials in packs)."""
    name = f"tiny_pack{pack}"  # one server for the module: each run its own study
    study_file = str(write_study(tmp_path, name, n_trials=8, epochs=10))
    workers = [subprocess.Popen(hpo_command("study", study_file, "--storage", postgres_url, "--pack", str(pack)), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [w.communicate(timeout=150) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, (_, err) in zip(workers, outs):
        assert w.returncode == 0, err
    outs = [" ".join(out.split()) for out, _ in outs]  # rich wraps long lines
    assert sorted("created; 3 paper baselines enqueued" in out for out in outs) == [False, True]
    assert sorted("resuming with" in out for out in outs) == [False, True]
    assert f"dashboard --storage {postgres_url}`" in outs[0]  # `hpo ...` or `.venv/bin/hpo ...`, as run

    study = load(postgres_url, name)
    assert count(study) == 8
    assert_no_duplicate_baselines(study)
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in study.trials if "worker" in t.user_attrs}
    assert pids == {str(w.pid) for w in workers}  # both trained
    assert study_attrs(study)["split"]["n_train"] == 500


def test_an_unreachable_server_is_one_line(tiny_mnist, tmp_path):
    url = f"postgresql://hpo:secret@127.0.0.1:{_free_port()}/hpo"
    r = run_hpo("study", str(write_study(tmp_path)), "--storage", url)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo: error: cannot open storage postgresql://hpo:***@127.0.0.1:")
    assert "secret" not in r.stderr
