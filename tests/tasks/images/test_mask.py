"""Mask planes named in configs."""

import pytest

from tasks.core.base import TaskError
from tasks.images import ImageError, MaskPlane, bits_from_names


def test_bits_from_names_ors_the_planes():
    assert bits_from_names(["NO_DATA", "BAD"]) == int(MaskPlane.NO_DATA | MaskPlane.BAD)
    assert bits_from_names([]) == 0


def test_unknown_plane_is_a_clear_task_error():
    with pytest.raises(ImageError, match="unknown mask plane 'BAD; DROP TABLE'") as info:
        bits_from_names(["SAT", "BAD; DROP TABLE"])
    assert isinstance(info.value, TaskError)
