"""Side-by-side comparison of every registered model (the paper's Tables 1-3, Figs. 4, 5 and 7).

Used by ``benchmarks/compare_baselines.py``. Modules by concern:

- :mod:`~e3relax.benchmark.budget`: the training budget shared by every model (steps, epochs, wall time);
- :mod:`~e3relax.benchmark.suite`: which models and ablations run, with which configs;
- :mod:`~e3relax.benchmark.data`: the dataset (built-in, an LMDB folder, or a layout converted on the fly);
- :mod:`~e3relax.benchmark.predict`: test-set predictions, per-structure metrics, inference timing;
- :mod:`~e3relax.benchmark.chgnet_compare`: CHGNet + FIRE on the same test structures, energy check;
- :mod:`~e3relax.benchmark.tables` and :mod:`~e3relax.benchmark.figures`: outputs.
"""
