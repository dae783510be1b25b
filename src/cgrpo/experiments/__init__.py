"""Floor 10 (entry): multi-run experiments: sweeps, run records, multi-seed statistics and
claim verdicts, reports. The scripts in ``benchmarks/`` are thin command lines over it, and
nothing in the package imports it.

Shared by the experiments:

- :mod:`~cgrpo.experiments.sweep`: runs in their own processes, a few at a time
- :mod:`~cgrpo.experiments.run_folders`: a sweep's run folders, finished at which step
- :mod:`~cgrpo.experiments.records`: a run's figures in one compressed file, restored whole
- :mod:`~cgrpo.experiments.config_diff`: where a saved run config differs from another
- :mod:`~cgrpo.experiments.statistics`: paired and pooled SE, the t quantile, sign tests
- :mod:`~cgrpo.experiments.cells`: table cells of those figures, starred where they count
- :mod:`~cgrpo.experiments.report`: the multi-seed page (tables, Pareto scatter, curves)

Competitive degradation (``benchmarks/competitive_degradation.py``):

- :mod:`~cgrpo.experiments.degradation`: the arms, the sweep's settings, each run's config
- :mod:`~cgrpo.experiments.degradation_sweep`: train and evaluate a run, the base, the budget
- :mod:`~cgrpo.experiments.degradation_records`: the sweep's records, kept and restored
- :mod:`~cgrpo.experiments.finals`: per-image final rewards, paired between arms
- :mod:`~cgrpo.experiments.claims`: the claims and their verdicts
- :mod:`~cgrpo.experiments.contrasts`: what each part adds; against another sweep
- :mod:`~cgrpo.experiments.degradation_report`: the runs read, the page written

Learning efficiency (``benchmarks/learning_efficiency.py``):

- :mod:`~cgrpo.experiments.efficiency`: the arms, each run's config, the evaluations
- :mod:`~cgrpo.experiments.supervised`: the supervised calibration run
- :mod:`~cgrpo.experiments.efficiency_report`: the page
"""
