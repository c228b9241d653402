"""Results, out of the storage: export (re-trainable configs), evaluate (`hpo train`), compare, and the
report that owns every table and picture (plots, activations sections); mix_seeds retrains a mix optimum.

export → evaluate → plots, activations → report → compare; mix_seeds
"""
