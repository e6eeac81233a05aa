"""``python -m bench.citus``."""

import sys

from bench.citus.run import main

sys.exit(main())
