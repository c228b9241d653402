"""`hpo bench`: run.py runs the items and writes BENCHMARKS.md; throughput.py (1), search.py (2), parallel.py
(3, 4), pack_speed.py (5), versus.py (6); load.py is `make load`."""
