"""``python -m taskstats_fast``: the same as the ``taskstats-fast`` command (see ``cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
