"""The load test at its smallest (hpo.bench.load; `make load` runs the large settings): 8 worker processes
through `hpo proxy` on a throwaway PostgreSQL cluster, one SIGKILLed mid-trial; nothing is lost."""

from __future__ import annotations

import pytest
from studyfiles import write_study

from hpo.bench.load import SECTION, Setting, kept_section, run_setting, section_body, study_file, table, write_section
from hpo.bench.pgcluster import Cluster, NoCluster
from hpo.search.studyfile import load_study


def test_eight_workers_through_the_proxy_with_one_killed(tiny_mnist, tmp_path):
    try:
        cluster = Cluster().__enter__()
    except NoCluster as e:
        pytest.skip(str(e))
    try:
        study = write_study(tmp_path, "tiny", n_trials=4, epochs=1)  # --smoke: 2 paper baselines
        r = run_setting(cluster, Setting("proxy", workers=8, trials=40, kills=1), tmp_path, log=lambda _: None,
                        timeout=400, study_path=study)  # a bound for a machine busy with other work
    finally:
        cluster.stop()
    assert len(r.killed) == 1 and r.states["FAIL"] >= 1  # one worker killed mid-trial, its trial failed
    assert r.total == 40 and r.left_running == 0 and r.duplicated == 0
    assert sorted(r.baselines.values()) == [1, 1], r.baselines  # each paper configuration run once
    assert not r.lost
    assert 0 < r.peak_connections <= 16 + 2, r.peak_connections  # the proxy's pool, not one per worker
    assert r.exit_codes.count(-9) == 1 and r.exit_codes.count(0) == 7, r.exit_codes
    assert "| hpo proxy | 8 | 40 | 1 |" in table([r])


def test_the_load_section_is_replaced_in_place_and_what_follows_it_is_kept(tmp_path):
    """`make load` rewrites its own section of BENCHMARKS.md; a section written after it (measured separately)
    stays, and `hpo bench` keeps only the load section when it rewrites the file."""
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\n## 1. Throughput\n\nold items\n\n{SECTION}\n## Load test: many workers\n\n"
                    "| old table |\n\n## 7. Search quality (measured separately)\n\nkept text\n")
    write_section(path, "## Load test: many workers\n\n| new table |\n")
    text = path.read_text()
    assert "| new table |" in text and "| old table |" not in text
    assert text.index("## 1. Throughput") < text.index(SECTION) < text.index("## 7. Search quality")
    assert text.endswith("kept text\n") and text.count(SECTION) == 1
    kept = kept_section(path)
    assert "| new table |" in kept and "## 7." not in kept and "## 1." not in kept
    fresh = tmp_path / "new.md"
    write_section(fresh, "## Load test: many workers\n\n| t |\n")
    assert fresh.read_text() == f"{SECTION}\n## Load test: many workers\n\n| t |\n"


def test_append_adds_this_run_s_rows_after_the_earlier_run_s(tmp_path):
    header = "| storage | workers |\n|---|---:|"
    first = section_body(f"{header}\n| PostgreSQL | 8 |\n| hpo proxy | 8 |",
                         "`make load ARGS=\"--workers 8\"` on day 1")
    path = tmp_path / "B.md"
    write_section(path, first)
    old = kept_section(path)
    both = section_body(f"{header}\n| PostgreSQL | 56 |", "`make load ARGS=\"--workers 56 --append\"` on day 2", old)
    rows = [line for line in both.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["| storage | workers |", "| PostgreSQL | 8 |", "| hpo proxy | 8 |", "| PostgreSQL | 56 |"]
    assert "`make load ARGS=\"--workers 8\"` on day 1, and `make load ARGS=\"--workers 56 --append\"` on day 2" in both


def test_the_load_study_is_relu3_adam_drawn_at_random_with_n_trials_and_no_more(tmp_path):
    # `make load` and the memory bench run this file: relu3_adam's TPE option would not load with the random
    # sampler, and confirmation runs would add trials beyond the n_trials the tally checks
    cfg = load_study(str(study_file(tmp_path)))
    assert cfg.sampler == "random" and cfg.pruner == "none" and cfg.sampler_options == {}
    assert cfg.confirm.runs == 0 and cfg.timeout is None and cfg.budget.threads == 1
    assert cfg.space.source == load_study("relu3_adam").space.source
