"""The search: the space grammar and study files, samplers and pruners, storage, the objective that joins
Optuna to training, and the study runner with its worker processes.

space → config (study files) → samplers, storage → budget, study → objective → workers → runner
"""
