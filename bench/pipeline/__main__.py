"""``python -m bench.pipeline``: runs ``bench_pipeline.py`` with the same arguments."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("bench_pipeline.py")), run_name="__main__")
