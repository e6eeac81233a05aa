"""``python -m bench.diffim``: runs ``bench_diffim.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench_diffim.py")), run_name="__main__")
