"""``python -m apdb.cli``: the ``apdb`` command line."""

import sys

from apdb.cli import main

sys.exit(main())
