"""Mock survey generation: 100,000 (the issue's figure: under a minute on 2 CPU cores) and 10,000 spectra.

Each call generates the spectra, labels and nuisances of a full :func:`jaxspec.data.mock.survey`
(APOGEE 7514-pixel grid, default noise) and returns the ``MockSurvey``.
"""

from __future__ import annotations

import jax

from jaxspec.data import mock


def _survey(n_stars: int):
    def factory():
        key = jax.random.key(0)

        def run():
            return mock.survey(key, n_stars, progress=False)

        return run

    return factory


BENCHMARKS = {
    "mock_survey_100k": _survey(100_000),
    "mock_survey_10k": _survey(10_000),
}
