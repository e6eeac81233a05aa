"""``python -m bench.render``: runs ``bench_render.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench_render.py")), run_name="__main__")
