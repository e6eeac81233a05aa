import numpy as np
import pytest

from tasks.images import Box2I, ImageError


def test_box_properties_and_contains():
    box = Box2I(10, 20, 5, 3)
    assert (box.x1, box.y1, box.shape) == (14, 22, (3, 5))
    x = np.array([9.5, 9.49, 14.49, 14.5, 12.0])
    y = np.array([20.0, 20.0, 21.0, 21.0, 22.49])
    assert box.contains(x, y).tolist() == [True, False, True, False, True]
    assert box.contains(12, 19.5) is True


def test_grow_intersection_slices():
    a = Box2I(0, 0, 10, 10)
    b = Box2I(5, 7, 10, 10)
    inter = a.intersection(b)
    assert inter == Box2I(5, 7, 5, 3)
    assert a.intersection(Box2I(20, 20, 2, 2)) is None
    assert a.grown(2) == Box2I(-2, -2, 14, 14)
    arr = np.arange(100).reshape(10, 10)
    rows, cols = a.slices(inter)
    # element [i, j] of the box at parent x = x0 + j, y = y0 + i
    assert arr[rows, cols][0, 0] == arr[7, 5]
    with pytest.raises(ImageError):
        a.slices(b)


def test_box_rejects_bad_input():
    with pytest.raises(ImageError):
        Box2I(0, 0, -1, 3)
    with pytest.raises(ImageError):
        Box2I(0.5, 0, 1, 3)
