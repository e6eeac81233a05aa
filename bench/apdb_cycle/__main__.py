"""``python -m bench.apdb_cycle``: run the APDB cycle benchmark."""

import sys

from bench.apdb_cycle.run import main

sys.exit(main())
