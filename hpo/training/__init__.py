"""Training: activations, models and the loop, from plain values; nothing here knows of Optuna.

spec (TrainConfig and the names a config may use, torch-free) → runtime (optimizers, device, TrainResult) →
activations → models → augment, fastmlp → pack, cycles → loop (train); memory and diagnostics measure a run for
the objective.
"""
