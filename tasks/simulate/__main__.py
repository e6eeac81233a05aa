"""``python -m tasks.simulate ROOT``."""

import sys

from tasks.simulate.cli import _standalone

sys.exit(_standalone())
