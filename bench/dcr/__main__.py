"""``python -m bench.dcr``: runs ``bench_template.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench_template.py")), run_name="__main__")
