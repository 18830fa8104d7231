"""`python -m orderpush ...`: the `orderpush` command line."""

import sys

from orderpush.cli import main

# The guard matters: `--workers` spawns processes, which import this module
# again as `__mp_main__`; without it each worker would run the command anew.
if __name__ == "__main__":
    sys.exit(main())
