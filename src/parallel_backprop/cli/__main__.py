"""``python -m parallel_backprop.cli ...``: the ``pbp`` command (as MPI ranks start it)."""

import sys

from . import main

if __name__ == "__main__":   # not when a worker process imports the main module again
    sys.exit(main())
