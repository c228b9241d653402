"""hpo: Optuna-driven tuning of small networks, held against hand-tuned results."""

__version__ = "0.1.0"
