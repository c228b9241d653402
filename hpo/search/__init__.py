"""The search: the space grammar, study and paper files, samplers and pruners, storage, the objective that joins
Optuna to training, trial packs, and the study runner with its worker processes.

proxy → storage → files, budget → space → papers → studyfile (study files) → study → objective → pack_runner →
workers → runner; samplers beside them
"""
