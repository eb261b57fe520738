"""``python -m parallel_backprop.cli ...``: the ``pbp`` command (MPI ranks and harnesses start it so)."""

import sys

from . import main

if __name__ == "__main__":   # not when a worker process imports the main module again
    sys.exit(main())
