"""The harness core shared by ``pbp bench``, ``pbp study`` and ``pbp tune``.

- :mod:`.records`      typed records (a measured configuration, a training run), their
                       status values and :func:`is_ok` for records read back from a file
- :mod:`.process`      a measured process: thread variables, own session, timeout, error line
- :mod:`.jsonio`       documents written atomically and read back with one-line errors
- :mod:`.metrics`      throughput, time per epoch, speedup over the baseline executor
- :mod:`.environment`  the machine, libraries and commit, recorded with every run
- :mod:`.plotstyle`    colours, line styles, log axes and legends of every plot

Nothing here imports matplotlib or a peer library at import time.
"""

from .jsonio import load_document, plain, write_document
from .metrics import epoch_seconds, speedups, throughput
from .process import THREAD_VARIABLES, error_line, kill, process_env, run_isolated
from .records import Measurement, Status, TrainingRun, is_ok, series

__all__ = ["Measurement", "Status", "THREAD_VARIABLES", "TrainingRun", "epoch_seconds",
           "error_line", "is_ok", "kill", "load_document", "plain", "process_env",
           "run_isolated", "series", "speedups", "throughput", "write_document"]
