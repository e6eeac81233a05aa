"""``python -m bench.replication``: run the replication benchmark."""

import sys

from bench.replication.run import main

sys.exit(main())
