"""``python -m bench.alerts``: runs ``bench_alerts.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench_alerts.py")), run_name="__main__")
