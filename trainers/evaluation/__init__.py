"""Evaluation of any policy on the paper's scenario suites (:mod:`~trainers.evaluation.suites`),
on the multi-cell network of Table IV (:mod:`~trainers.evaluation.network`, the hcn suite) and
its tables and figures (:mod:`~trainers.evaluation.report`)."""
