"""``python -m bench.apdb_concurrency``."""

import sys

from bench.apdb_concurrency.run import main

sys.exit(main())
