"""Evaluation of any policy on the paper's scenario suites (:mod:`~trainers.evaluation.suites`)
and its tables and figures (:mod:`~trainers.evaluation.report`)."""
