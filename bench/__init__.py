"""Benchmarks: they measure and print (and record in docs/benchmarks.md); they never pass or fail. Beside them, the
tools of a run on a lent GPU machine: the device check (gpu_check.sh) and training sized to its time limit
(budgeted_train)."""
