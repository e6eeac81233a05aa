"""``python -m bench.forcedphot``: runs ``bench_forcedphot.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench_forcedphot.py")), run_name="__main__")
