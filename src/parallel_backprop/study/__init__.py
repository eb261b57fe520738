"""The study: the seed's experiments, run on this machine and written up.

- :mod:`.tune`     ``pbp tune``: learning-rate grid search on the validation split
- :mod:`.config`   what a study runs, the ``quick`` and ``paper`` presets
- :mod:`.run`      ``pbp study``: the parts (the bench harness's grids, ``pbp train``
                   runs on the real data, tuning) and ``study.json``
- :mod:`.figures`  the report's PNG figures (matplotlib, the ``plots`` extra)
- :mod:`.report`   ``pbp report``: ``report.md`` and a self-contained ``report.html``

Nothing here imports matplotlib or a peer library at import time.
"""

from .config import PARTS, PRESETS, StudyConfig
from .tune import SEED_LRS, TuneConfig, tune

__all__ = ["PARTS", "PRESETS", "SEED_LRS", "StudyConfig", "TuneConfig", "tune"]
