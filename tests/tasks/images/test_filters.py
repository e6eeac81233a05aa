import numpy as np
import pytest

from tasks.images import ImageError, get_band, subfilter_wavelengths
from tasks.images.filters import BANDS, subfilter_effective_wavelengths


def test_bands_are_ordered_and_contain_their_effective_wavelength():
    names = list(BANDS)
    assert names == ["u", "g", "r", "i", "z", "y"]
    effs = [BANDS[b].effective_wavelength for b in names]
    assert effs == sorted(effs)
    for b in BANDS.values():
        assert b.wavelength_min < b.effective_wavelength < b.wavelength_max


def test_subfilters_tile_the_band():
    limits = subfilter_wavelengths("g", 3)
    band = get_band("g")
    assert limits.shape == (3, 2)
    assert limits[0, 0] == band.wavelength_min and limits[-1, 1] == band.wavelength_max
    np.testing.assert_allclose(np.diff(limits, axis=1), band.bandwidth / 3)
    np.testing.assert_array_equal(limits[1:, 0], limits[:-1, 1])
    np.testing.assert_allclose(subfilter_effective_wavelengths("g", 3), limits.mean(axis=1))


@pytest.mark.parametrize("bad", ["w", "G", None])
def test_unknown_band(bad):
    with pytest.raises(ImageError):
        get_band(bad)


def test_bad_subfilter_count():
    with pytest.raises(ImageError):
        subfilter_wavelengths("r", 0)
