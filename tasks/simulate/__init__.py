"""Survey simulator with known truth (issue 3).

Public API::

    from tasks.simulate import SimulationConfig, simulate_survey
    truth = simulate_survey(SimulationConfig.tiny(seed=1), "data/")   # writes the data layout
    truth.sources      # per visit/detector truth (ra, dec, x, y, flux nJy, ...)

    from tasks.simulate import make_exposure_with_sources
    exposure, sources = make_exposure_with_sources(size=(256, 256), n_sources=50, seed=3)

Lower level: `render_sources` (noiseless PSF stamps, optionally each source
spread along the zenith as `DcrComponents`), `render_exposure` (noise, defects,
metadata), `plan_visits`, `sed_dcr_shift` (a source's mean DCR shift),
`sed_dcr_components` (its light split into sub-band components) and
`source_dcr_components` (the components the survey draws on a visit/detector).
"""

from tasks.simulate.chromatic import DcrComponents
from tasks.simulate.config import SimulationConfig
from tasks.simulate.observing import plan_visits
from tasks.simulate.quick import make_exposure_with_sources, make_visit_info
from tasks.simulate.refraction import (
    differential_refraction,
    refraction,
    sed_dcr_components,
    sed_dcr_shift,
)
from tasks.simulate.render import add_noise, render_exposure, render_sources
from tasks.simulate.survey import simulate_survey, source_dcr_components

__all__ = [
    "DcrComponents",
    "SimulationConfig",
    "add_noise",
    "differential_refraction",
    "make_exposure_with_sources",
    "make_visit_info",
    "plan_visits",
    "refraction",
    "render_exposure",
    "render_sources",
    "sed_dcr_components",
    "sed_dcr_shift",
    "simulate_survey",
    "source_dcr_components",
]
