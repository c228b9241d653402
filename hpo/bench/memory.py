"""`python -m hpo.bench.memory`: one worker's resident memory over a long run of cheap trials.

`hpo study` (one process: it trains its trials itself) on the load test's study file (relu3_adam at --smoke
scale, random sampler, one thread) and a fresh SQLite file, for --trials trials; its RSS (/proc/PID/status
VmRSS) and the finished trials (a read-only query of the file) are sampled every --every seconds. The verdict
compares the RSS after warm-up (the first --warmup trials) with the RSS at the end: flat means within 10%.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from hpo.bench.load import study_file
from hpo.errors import HpoError
from hpo.plotting import plt, save
from hpo.provenance import ROOT


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def finished(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
            return c.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    except sqlite3.Error:
        return -1  # busy or not created yet: this sample has no count


def run_memory(trials: int, every: float = 2.0) -> list[tuple[float, int, float]]:
    """(seconds, finished trials, RSS MB) samples over one run."""
    samples = []
    with tempfile.TemporaryDirectory(prefix="hpo-mem-") as tmp:
        work = Path(tmp)
        db = work / "mem.db"
        cmd = [sys.executable, "-m", "hpo.cli", "study", str(study_file(work)), "--smoke", "--trials", str(trials),
               "--storage", f"sqlite:///{db}", "--artifacts", str(work / "artifacts")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while proc.poll() is None:
                rss = rss_mb(proc.pid)
                done = finished(db)
                if rss is not None and done >= 0:
                    samples.append((time.perf_counter() - t0, done, rss))
                time.sleep(every)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            raise HpoError(f"the memory run failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return samples


def verdict(samples: list[tuple[float, int, float]], warmup: int) -> tuple[float, float, float]:
    """(RSS MB just after warm-up, RSS MB at the end, growth in percent)."""
    after = [s for s in samples if s[1] >= warmup] or samples
    start, end = after[0][2], after[-1][2]
    return start, end, (end - start) / start * 100


def picture(samples: list[tuple[float, int, float]], warmup: int, path: Path) -> Path:
    """RSS against finished trials, with the 10% band above the RSS after warm-up."""
    start, end, growth = verdict(samples, warmup)
    shown = [(n, r) for _, n, r in samples if n > 0]  # from the first finished trial: start-up is not the run
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot([n for n, _ in shown], [r for _, r in shown], color="tab:blue", lw=1.5, label="RSS")
    ax.axhspan(start, start * 1.10, color="tab:green", alpha=0.12, label="within 10% of the RSS after warm-up")
    ax.axvline(warmup, color="grey", lw=0.8, ls=":", label=f"warm-up ({warmup} trials)")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("resident memory (MB)")
    ax.set_ylim(0, max(r for _, _, r in samples) * 1.15)
    ax.set_title(f"one hpo study worker over {samples[-1][1]:,} cheap trials: {growth:+.1f}% after warm-up",
                 fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpo.bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5000, help="trials in the run (default 5000)")
    p.add_argument("--warmup", type=int, default=200, help="trials before the reference sample (default 200)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between samples (default 2)")
    p.add_argument("--out", default="runs/memory.csv", help="CSV of the samples (default runs/memory.csv)")
    args = p.parse_args(argv)
    try:
        if args.trials < 1 or args.warmup < 0 or args.every <= 0:
            raise HpoError("--trials must be positive, --warmup not negative, --every above 0")
        samples = run_memory(args.trials, args.every)
    except HpoError as e:
        print(f"hpo: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("seconds,trials,rss_mb\n" + "".join(f"{s:.1f},{n},{r:.1f}\n" for s, n, r in samples))
    drawn = picture(samples, args.warmup, out.with_suffix(".png"))
    start, end, growth = verdict(samples, args.warmup)
    step = max(1, len(samples) // 10)
    for s, n, r in samples[::step] + samples[-1:]:
        print(f"{s:7.0f}s {n:6d} trials {r:7.1f} MB")
    print(f"RSS after {args.warmup} trials {start:.0f} MB, at the end {end:.0f} MB: {growth:+.1f}% "
          f"({'flat' if abs(growth) <= 10 else 'NOT flat'} within 10%); samples in {out}, picture {drawn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
