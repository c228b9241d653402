"""The commands as Python functions, for notebooks and scripts; `import hpo` gives them (hpo/__init__.py).

    import hpo
    study = hpo.run_study("relu3_adam", trials=20)        # hpo study relu3_adam --trials 20
    hpo.export("relu3_adam")                               # hpo export relu3_adam -> runs/relu3_adam/best.yaml
    result = hpo.train("runs/relu3_adam/best.yaml", seeds=5)   # hpo train FILE --seeds 5
    comparison = hpo.compare("relu3_adam", seeds=5)        # hpo compare relu3_adam --seeds 5
    hpo.report("relu3_adam")                               # hpo report relu3_adam

Each takes the same options as its command (as keyword arguments) and returns what the command prints from:
the Optuna study, the (path, trial) pairs written, the runs over seeds, the comparison as a dict, the report's
path. Bad input raises hpo.errors.HpoError with the same one-line message the command prints.
"""

from __future__ import annotations

import optuna

from hpo.results.compare import compare_study as compare
from hpo.results.export import export
from hpo.results.notes import DashboardNotes
from hpo.results.report import report_study as report
from hpo.results.retrain import train_file as train
from hpo.search import runner

__all__ = ["compare", "export", "report", "run_study", "train"]


def run_study(name_or_path: str, *, artifacts: str | None = None, **options) -> optuna.Study:
    """`hpo study`: hpo.search.runner.run_study (its options) with the notes and pictures it writes for
    optuna-dashboard; `artifacts`: their folder (default: $HPO_ARTIFACT_STORE, else beside a SQLite storage)."""
    return runner.run_study(name_or_path, notes=DashboardNotes(artifacts), **options)
