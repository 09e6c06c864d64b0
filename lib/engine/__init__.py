"""Ignite engines: train and evaluate any registered model (TensorBoard, checkpoints, exact resume, DDP).

Entry points: :func:`e3relax.engine.trainer.train` (``e3relax train``) and
:func:`e3relax.engine.report.evaluate_checkpoint` (``e3relax evaluate``). Configuration lives in
:mod:`e3relax.engine.config`; modules are imported lazily by their users.
"""
