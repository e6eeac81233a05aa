import numpy as np
import pytest

from tasks.core.base import TaskError
from tasks.core.ids import make_ids, split_ids


def test_ids_round_trip_and_unique():
    a = make_ids(9_999_999, 999, 1000)
    b = make_ids(9_999_999, 998, 1000)
    assert a.dtype == np.int64 and np.all(a > 0)
    assert len(np.union1d(a, b)) == 2000
    visit, det, seq = split_ids(a)
    assert np.all(visit == 9_999_999) and np.all(det == 999)
    np.testing.assert_array_equal(seq, np.arange(1000))


@pytest.mark.parametrize("args", [(-1, 0, 1), (2**33, 0, 1), (1, 1000, 1), (1, 0, 2**20 + 1)])
def test_ids_refuse_out_of_range(args):
    with pytest.raises(TaskError):
        make_ids(*args)


def test_the_largest_visit_fits_in_int64_and_round_trips():
    # ZTF exposure numbers (~3e8) and visits numbered by midpoint seconds (~5e9) fit
    ids = make_ids(2**33 - 1, 999, 2, start=2**20 - 2)
    assert ids.dtype == np.int64 and np.all(ids > 0) and ids[-1] < 2**63 - 1
    visit, det, seq = split_ids(ids)
    assert np.all(visit == 2**33 - 1) and np.all(det == 999)
    np.testing.assert_array_equal(seq, [2**20 - 2, 2**20 - 1])
