"""``python -m bench.apdb_daytime``: run the daytime operations benchmark."""

import sys

from bench.apdb_daytime.run import main

sys.exit(main())
