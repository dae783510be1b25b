"""Floor 10 (entry): multi-run experiments: sweeps, run records, multi-seed statistics and
claim verdicts, reports. The scripts in ``benchmarks/`` are thin command lines over it.
"""
