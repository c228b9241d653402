"""What optuna-dashboard shows beside the trials (`DashboardNotes` hands it to hpo.search.runner, which knows no
presentation): a note in words on every trial as it ends, the study's live
"best so far" note, the report as the study's note (written by hpo.results.report), and where pictures
(artifacts) are stored.

Notes are optuna-dashboard's (`save_note`): Markdown kept as study system attributes in chunks of 2,045
characters, versioned. Every write reads all of the study's system attributes (to find the version and to
blank older chunks), and the dashboard reads them all for every trial it serialises, so notes are kept short:
a trial note is one chunk, and the study's live note is rewritten at most every LIVE_EVERY_TRIALS trials or
LIVE_EVERY_SECONDS seconds (README: measured costs).

Pictures are `optuna.artifacts` in a FileSystemArtifactStore: by default the folder `artifacts` beside a SQLite
file (runs/artifacts for sqlite:///runs/hpo.db), else --artifacts PATH or $HPO_ARTIFACT_STORE. A trial's
artifact is a trial system attribute, which Optuna accepts only while the trial runs: a trial's picture is
uploaded before it is told, from the objective.

A note or picture that cannot be written never fails the trial or the report: it logs one warning line (once
per distinct failure in a process) and the work goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import GrpcStorageProxy, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note

from hpo import optuna_private
from hpo.display import counts_line, describe_config, pct
from hpo.errors import StudyError
from hpo.plotting import plt, save
from hpo.search.papers import Paper, study_paper
from hpo.trials import outcome, study_attrs
from hpo.urls import sqlite_path

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "HPO_ARTIFACT_STORE"
# One chunk of optuna-dashboard's note storage: a trial note costs two system attributes (version, text).
TRIAL_NOTE_MAX = 2000  # at most optuna_private.NOTE_CHUNK
REASON_MAX = 300
# Trials numbered from here on get a note only when they are the paper's baselines or beat every trial completed
# before them (the ones a person opens). Notes are study system attributes (two per note), and optuna-dashboard
# scans all of the study's system attributes for every trial whenever it serves the study page (its list of a
# trial's artifacts): the page's cost grows with trials x notes. Measured at 10,000 trials (README): a note on
# each of the first 1,000 added 5-7 s to a 12 s first load. A later trial's outcome, reason, configuration and
# curve stay in its user attributes, which the dashboard's trial table shows.
TRIAL_NOTES_UP_TO = 100
# The live note: after the first finished trial, then when this many more have finished or this many seconds
# have passed since the last write (checked as trials end), and once more when the run ends.
LIVE_EVERY_TRIALS = 10
LIVE_EVERY_SECONDS = 60.0
# Study system attribute listing the artifact ids of the report's pictures, so that a new report replaces them.
REPORT_ARTIFACTS_ATTR = "hpo:report_artifacts"
CURVE_DPI = 72


# --- where pictures live --------------------------------------------------------------------------------


def artifact_dir(url: str | None, arg: str | None = None) -> Path | None:
    """The artifact folder for storage `url`: --artifacts PATH, else $HPO_ARTIFACT_STORE, else `artifacts`
    beside a SQLite file; None for another storage without either (pictures are then left out)."""
    for where, raw in (("--artifacts", arg), (ARTIFACTS_ENV, os.environ.get(ARTIFACTS_ENV))):
        if raw is None:
            continue
        if not raw.strip():
            raise StudyError(f"{where}: expected a folder for the dashboard's pictures, but got an empty value")
        path = Path(raw).expanduser()
        if path.exists() and not path.is_dir():
            raise StudyError(f"{where}: {path} exists and is not a folder")
        return path
    db = sqlite_path(url)
    return db.parent / "artifacts" if db is not None else None


def open_store(path: Path | None) -> FileSystemArtifactStore | None:
    """The store in `path`, the folder made if needed; None for None."""
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot make the artifact folder {path}: {e.strerror or e}") from None
    return FileSystemArtifactStore(path)


def study_url(study: optuna.Study) -> str | None:
    """The SQLite URL a study's storage was opened on, or None for any other storage."""
    storage = optuna_private.backend(study)
    if isinstance(storage, RDBStorage) and storage.engine.url.get_backend_name() == "sqlite":
        return f"sqlite:///{storage.engine.url.database}"
    return None


def is_persistent(study: optuna.Study) -> bool:
    return isinstance(optuna_private.backend(study), (RDBStorage, GrpcStorageProxy))


_WARNED: set[tuple[str, str]] = set()  # (what failed, exception type): each is shown once per process


def warn(what: str, error: BaseException, where: str = "") -> None:
    """One warning line per kind of failure in this process (a full disk must not print one line per trial);
    `where` (e.g. "trial 12: ") names the first one it hit."""
    key = (what, type(error).__name__)
    if key in _WARNED:
        return
    _WARNED.add(key)
    message = str(error).splitlines()[0] if str(error) else ""
    log.warning(f"hpo: warning: {where}{what}: {type(error).__name__}: {message} (the run goes on; "
                f"repeats are not shown)")


# --- a trial's note -------------------------------------------------------------------------------------


def trial_note(number: int, state: str, attrs: dict, value: float | None, paper: Paper | None = None,
               picture: str | None = None) -> str:
    """A trial in words: what it ended as and why, its configuration, epochs and time, for a baseline the paper's
    row and number, and its validation curve (`picture`: the artifact's URL path). At most TRIAL_NOTE_MAX chars."""
    epochs, secs = attrs.get("epochs_trained"), attrs.get("train_seconds")
    planned = (attrs.get("config") or {}).get("epochs")
    head = f"### Trial {number}: {state}"
    lines = [head, ""]
    ran = ""
    if epochs is not None:
        ran = f"{epochs}{f' of {planned}' if planned and epochs != planned else ''} epochs"
        if secs is not None:
            ran += f" in {secs:.1f} s"
            if attrs.get("samples_per_sec"):
                ran += f" ({attrs['samples_per_sec']:,.0f} samples/s)"
    if value is not None:
        lines.append(f"Validation accuracy **{pct(value)}**" + (f" after {ran}." if ran else "."))
    elif ran:
        lines.append(f"Trained {ran}" + (f"; last validation accuracy {pct(attrs['val_curve'][-1])}."
                                         if attrs.get("val_curve") else "."))
    else:
        lines.append("Not trained." if state not in ("crashed", "interrupted") else "Stopped before any epoch ended.")
    reason = str(attrs.get("reason") or "")
    if reason:
        reason = reason if len(reason) <= REASON_MAX else reason[:REASON_MAX - 1] + "…"
        lines += ["", f"Reason: {reason}"]
    config = attrs.get("config")
    if config:
        params = f" ({attrs['n_params']:,} parameters)" if attrs.get("n_params") else ""
        lines += ["", f"Configuration: `{describe_config(config, attrs.get('io'))}`{params}."]
    if attrs.get("baseline"):
        row = next((r for r in paper.rows if r.name == attrs["baseline"]), None) if paper else None
        where = f" ({paper.title.split(',')[0]}, Table {row.table})" if row else ""
        reported = attrs.get("paper_reported")
        line = f"Paper baseline **{attrs['baseline']}**{where}"
        if reported is not None:
            line += f": the paper reports {pct(reported)}"
            if value is not None:
                line += f"; here {pct(value)} on the validation split ({100 * (value - reported):+.2f} points)"
        lines += ["", line + "."]
    if picture:
        lines += ["", f"![validation accuracy per epoch]({picture})"]
    body = "\n".join(lines)
    return body if len(body) <= TRIAL_NOTE_MAX else body[:TRIAL_NOTE_MAX - 1] + "…"


def plot_curve(curve: list[float], number: int, path: Path) -> Path:
    """A small picture of one trial's validation accuracy per epoch."""
    fig, ax = plt.subplots(figsize=(4, 2.4))
    ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"trial {number}")
    ax.grid(alpha=0.3)
    return save(fig, path, dpi=CURVE_DPI)


def new_best(trial: optuna.Trial, state: str, value: float | None) -> bool:
    """Whether a trial that is ending complete with `value` beats every trial completed before it (single
    objective; one query of the storage's best trial)."""
    study = trial.study
    if state != "complete" or value is None or len(study.directions) > 1:
        return False
    try:
        best = study.best_value
    except ValueError:  # nothing completed yet
        return True
    return value > best if study.direction == StudyDirection.MAXIMIZE else value < best


class TrialNotes:
    """Writes a trial's note (and, for a completed trial of 2+ epochs, its curve picture) while it still runs:
    the objective calls `write` as the trial's outcome becomes known, before Optuna tells it. Trials numbered
    `up_to` or more get one only as baselines or as a new best (TRIAL_NOTES_UP_TO says why)."""

    def __init__(self, paper: Paper | None = None, store: FileSystemArtifactStore | None = None,
                 up_to: int = TRIAL_NOTES_UP_TO):
        self.paper, self.store, self.up_to = paper, store, up_to

    def write(self, trial: optuna.Trial, state: str, value: float | None) -> None:
        attrs = trial.user_attrs
        if trial.number >= self.up_to and not attrs.get("baseline") and not new_best(trial, state, value):
            return
        picture = None
        if self.store is not None and state == "complete" and len(attrs.get("val_curve") or []) >= 2:
            try:
                picture = self._upload_curve(trial, attrs["val_curve"])
            except Exception as e:  # the note goes without its picture
                warn("a trial's validation-curve picture was not uploaded", e, f"trial {trial.number}: ")
        try:
            # save_note reads every study system attribute twice (the version, older chunks to blank): with a
            # note per trial that read grows with the study (README: measured costs). A trial that has just ended
            # has no note yet, so its first note is written without either read.
            optuna_private.save_first_trial_note(
                trial, trial_note(trial.number, state, attrs, value, self.paper, picture))
        except Exception as e:  # a note is a view of the trial, never a reason to lose it
            warn("a trial's dashboard note was not written", e, f"trial {trial.number}: ")

    def _upload_curve(self, trial: optuna.Trial, curve: list[float]) -> str:
        with tempfile.TemporaryDirectory(prefix="hpo-curve-") as folder:  # the file name is what the dashboard lists
            path = plot_curve(curve, trial.number, Path(folder) / f"trial-{trial.number}-validation-curve.png")
            artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
        return f"/artifacts/{optuna_private.study_id(trial.study)}/{optuna_private.trial_id(trial)}/{artifact_id}"


# --- the study's note -----------------------------------------------------------------------------------


def _value(t: FrozenTrial) -> float:
    return t.values[0]  # accuracy is always the first objective


def live_note(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> str:
    """The study's note while it runs: the best trial so far against the paper's best configuration, both on
    the validation split."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    attrs = study_attrs(study)  # the paper's record sits in the provenance system attribute
    name = attrs.get("hpo_study", study.study_name)
    finished = sum(t.state.is_finished() for t in trials)
    lines = [f"## {study.study_name}: best so far (validation)", "",
             f"{finished} finished trials ({counts_line(study)}); updated "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, at most every {LIVE_EVERY_TRIALS} trials or "
             f"{LIVE_EVERY_SECONDS:.0f} s while the study runs.", ""]
    paper = study_paper(attrs) if attrs.get("paper_record") else None  # the paper as recorded, not its file
    if paper is not None:
        lines += [f"Paper: **{paper.title}**" + (f". {paper.citation}" if paper.citation else ""), ""]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if not done:
        return "\n".join(lines + ["No trial has completed yet."])
    best = max(done, key=lambda t: (_value(t), -t.number))
    rows = [("best so far", f"trial {best.number}", pct(_value(best)),
             describe_config(best.user_attrs.get("config", {}), best.user_attrs.get("io")))]
    baselines = [t for t in trials if t.user_attrs.get("baseline") and t.state != TrialState.FAIL]
    paper_best = max(baselines, key=lambda t: t.user_attrs.get("paper_reported") or 0, default=None)
    if paper_best is not None:
        reported = paper_best.user_attrs.get("paper_reported")
        here = pct(_value(paper_best)) if paper_best.state == TrialState.COMPLETE else outcome(paper_best)
        rows.append((f"paper's best configuration, {paper_best.user_attrs['baseline']} (paper reports "
                     f"{pct(reported)} on its test set)", f"trial {paper_best.number}", here,
                     describe_config(paper_best.user_attrs.get("config", {}), paper_best.user_attrs.get("io"))))
    lines += ["| | trial | validation accuracy | configuration |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | `{d}` |" for a, b, c, d in rows]
    if paper_best is not None and paper_best.state == TrialState.COMPLETE:
        d = 100 * (_value(best) - _value(paper_best))
        lines += ["", f"The best so far is **{d:+.2f} points** against the paper's best configuration trained here."]
    elif paper_best is not None:
        lines += ["", "The paper's best configuration has not completed here (yet)."]
    lines += ["", f"`hpo compare {name}` re-runs the paper's configurations and the best trial on the test set over "
                  f"seeds; its table, findings and pictures then replace this note (`hpo report {name}` rewrites them "
                  f"from the last comparison)."]
    return "\n".join(lines)


class LiveNote:
    """Study callback: rewrites the study's live note after the first finished trial, then at most every
    LIVE_EVERY_TRIALS trials or LIVE_EVERY_SECONDS seconds; `flush` writes it once more when a run ends."""

    def __init__(self, every_trials: int = LIVE_EVERY_TRIALS, every_seconds: float = LIVE_EVERY_SECONDS,
                 clock=time.monotonic):
        self.every_trials, self.every_seconds, self.clock = every_trials, every_seconds, clock
        self.pending, self.last, self.writes = 0, None, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        self.pending += 1
        now = self.clock()
        if self.last is None or self.pending >= self.every_trials or now - self.last >= self.every_seconds:
            self.flush(study)

    def flush(self, study: optuna.Study) -> None:
        if self.last is not None and not self.pending:
            return
        try:
            save_note(study, live_note(study))
            self.writes += 1
        except Exception as e:
            warn("the study's live dashboard note was not updated", e, f"study {study.study_name}: ")
        self.pending, self.last = 0, self.clock()


# --- what `hpo study` writes while it runs ------------------------------------------------------------


@dataclass(frozen=True)
class DashboardNotes:
    """The notes and pictures a study run writes for optuna-dashboard, handed to hpo.search.runner.run_study
    (hpo.api.run_study and `hpo study` pass one). Picklable: each worker process opens its own store from it.

    `artifacts`: the --artifacts argument until `bind`, then the resolved folder (None: notes without pictures)."""

    artifacts: str | None = None
    bound: bool = False

    def bind(self, url: str | None) -> DashboardNotes:
        """Resolved against the storage URL; a bad --artifacts (or $HPO_ARTIFACT_STORE) fails here."""
        folder = artifact_dir(url, self.artifacts)
        return DashboardNotes(str(folder) if folder is not None else None, bound=True)

    def missing_pictures(self, url: str) -> str | None:
        """The line to print when there is no folder for the pictures."""
        if self.artifacts is not None:
            return None
        return (f"no artifact folder for {url}: trial notes without pictures; pass --artifacts PATH (or set "
                f"{ARTIFACTS_ENV}) to add them")

    def trial_notes(self, paper: Paper | None) -> TrialNotes:
        """The trials' notes, with their store (its folder made here)."""
        return TrialNotes(paper, open_store(Path(self.artifacts) if self.artifacts else None))

    def live(self) -> LiveNote:
        return LiveNote()


# --- the report in the dashboard (hpo.results.report builds the Markdown) --------------------------------


def replace_report_pictures(study: optuna.Study, store: FileSystemArtifactStore, paths: list[Path]) -> dict[str, str]:
    """Upload the report's pictures as study artifacts; returns {file name: URL path} for the note to embed.

    A picture the last report uploaded under the same file name is overwritten in place, under its artifact id:
    neither Optuna nor the dashboard can remove an artifact's record (the dashboard's delete leaves a null one,
    which optuna.artifacts.get_all_artifact_meta cannot read), so a new id per report would pile up records."""
    study_id = optuna_private.study_id(study)
    ids = dict(optuna_private.study_system_attrs(study).get(REPORT_ARTIFACTS_ATTR) or {})
    urls = {}
    for path in paths:
        artifact_id = ids.get(path.name)
        if artifact_id is not None:
            with open(path, "rb") as f:
                store.write(artifact_id, f)
        else:
            artifact_id = ids[path.name] = upload_artifact(artifact_store=store, file_path=str(path),
                                                           study_or_trial=study)
        urls[path.name] = f"/artifacts/{study_id}/{artifact_id}"
    optuna_private.set_study_system_attr(study, REPORT_ARTIFACTS_ATTR, ids)
    return urls


def publish_report(study: optuna.Study, pictures: list[Path], compose: Callable[[dict[str, str]], str],
                   store: FileSystemArtifactStore | None) -> bool:
    """Put the report into the study's note: upload `pictures` (when there is a store), then save
    compose({file name: URL path}). False, with one warning line, when it could not be done."""
    try:
        urls = replace_report_pictures(study, store, pictures) if store is not None else {}
        save_note(study, compose(urls))
        return True
    except Exception as e:  # report.md is the record; the dashboard's copy must not cost it
        warn("the report was not put into the study's dashboard note", e, f"study {study.study_name}: ")
        return False
