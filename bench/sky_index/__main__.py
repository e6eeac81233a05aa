"""``python -m bench.sky_index``: runs ``planner.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("planner.py")), run_name="__main__")
