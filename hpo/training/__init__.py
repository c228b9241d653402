"""Training: activations, models and the loop, from plain values; nothing here knows of Optuna.

config (TrainConfig, TrainResult, optimizers) → activations → models → fastmlp, cycles → loop (train);
memory and diagnostics measure a run for the objective.
"""
