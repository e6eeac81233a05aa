"""``python -m bench.apdb_scale``: run the APDB scale benchmark."""

import sys

from bench.apdb_scale.run import main

sys.exit(main())
