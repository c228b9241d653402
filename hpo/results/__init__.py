"""Results, out of the storage: export (re-trainable configs), retrain (`hpo train`), compare, and the
report that owns every table and picture (plots, charts, activation_report sections, the dashboard's notes);
mix_seeds retrains a mix optimum.

export → activation_report → retrain → plots, charts, notes → report → compare; mix_seeds
"""
