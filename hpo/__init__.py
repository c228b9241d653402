"""hpo: Optuna-driven tuning of small networks, held against hand-tuned results.

The package reads top-down, as the data flows (each floor imports only from the floors below it):

    errors, trials, display, stats, provenance,       the ground floor, usable by all
    plotting, optuna_private
    sources, data                                     where a data set comes from; data sets as tensors
    training/                                         activations, models, the loop (knows nothing of Optuna)
    search/                                           space grammar, study and paper files, samplers, storage,
                                                      objective, the study runner and its workers
    results/                                          export, hpo train, compare, the report and its pictures
    tools/, bench/                                    hpo activations, hpo dashboard; hpo bench
    api, cli                                          the commands as functions; the `hpo` command

From Python: hpo.run_study, hpo.export, hpo.train, hpo.compare, hpo.report (hpo/api.py).
"""

__version__ = "0.1.0"
__all__ = ["compare", "export", "report", "run_study", "train"]


def __getattr__(name: str):
    # The commands are imported on first use, not with the package: `hpo` (the CLI) imports this package
    # before it knows which command runs, and `hpo check` or `hpo --help` must not wait for torch.
    if name in __all__:
        from hpo import api

        return getattr(api, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
