"""Protocol action grammar (design doc §5): masked sampling and log-probs
(:mod:`~trainers.pag.sampler`, eqs. 12-14) over interchangeable grammar backends
(:mod:`~trainers.pag.backends`)."""
