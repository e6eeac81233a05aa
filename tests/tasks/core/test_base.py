"""Tests of the task framework (tasks.core.base)."""

from __future__ import annotations

import logging
import time
from datetime import datetime

import pytest
from pydantic import Field, ValidationError

from tasks.core.base import NoWorkFound, Struct, Task, TaskConfig, TaskError


class LeafConfig(TaskConfig):
    scale: float = Field(2.0, gt=0, description="Multiplier.")


class LeafTask(Task):
    ConfigClass = LeafConfig
    _DefaultName = "leaf"

    def run(self, value: float) -> Struct:
        with self.timer("scale"):
            time.sleep(0.01)
            result = value * self.config.scale
        self.metadata["lastValue"] = result
        return Struct(value=result)


class MiddleConfig(TaskConfig):
    leaf: LeafConfig = LeafTask.makeField("The leaf subtask.")
    offset: float = Field(1.0, description="Added after the leaf.")


class MiddleTask(Task):
    ConfigClass = MiddleConfig
    _DefaultName = "middle"
    _subtask_classes = {"leaf": LeafTask}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("leaf")

    def run(self, value: float) -> Struct:
        return Struct(value=self.leaf.run(value).value + self.config.offset)


class TopConfig(TaskConfig):
    middle: MiddleConfig = MiddleTask.makeField("The middle subtask.")


class TopTask(Task):
    ConfigClass = TopConfig
    _DefaultName = "top"
    _subtask_classes = {"middle": MiddleTask}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("middle")

    def run(self, value: float) -> Struct:
        with self.timer("run"):
            return self.middle.run(value)


def test_config_defaults_validation_and_descriptions():
    config = TopConfig()
    assert config.middle.leaf.scale == 2.0
    with pytest.raises(ValidationError):
        LeafConfig(scale=-1)
    with pytest.raises(ValidationError):
        LeafConfig(scael=3)  # typo: unknown fields are refused
    config = LeafConfig()
    with pytest.raises(ValidationError):
        config.scale = 0  # assignments are validated too
    for model in (LeafConfig, MiddleConfig, TopConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_subtasks_names_and_task_dict():
    config = TopConfig()
    config.middle.leaf.scale = 3.0
    top = TopTask(config=config)
    assert top.run(2.0).value == pytest.approx(7.0)
    assert top.getName() == "top"
    assert top.middle.getName() == "middle"
    assert top.middle.leaf.getFullName() == "top.middle.leaf"
    tasks = top.getTaskDict()
    assert set(tasks) == {"top", "top.middle", "top.middle.leaf"}
    assert tasks["top.middle.leaf"] is top.middle.leaf
    tasks.clear()  # a copy: the hierarchy is unaffected
    assert len(top.getTaskDict()) == 3
    assert top.middle.leaf.log.name == "tasks.top.middle.leaf"


def test_metadata_and_timer():
    top = TopTask()
    top.run(1.0)
    meta = top.getFullMetadata()
    assert set(meta) == {"top", "top.middle", "top.middle.leaf"}
    leaf = meta["top.middle.leaf"]
    assert leaf["lastValue"] == 2.0
    assert leaf["scaleDuration"] >= 0.01
    start = datetime.fromisoformat(leaf["scaleStartUtc"])
    end = datetime.fromisoformat(leaf["scaleEndUtc"])
    assert (end - start).total_seconds() == pytest.approx(leaf["scaleDuration"], abs=0.01)
    assert leaf["scaleEndCpuTime"] >= leaf["scaleStartCpuTime"]
    assert meta["top"]["runDuration"] >= leaf["scaleDuration"]
    # a subtask's view covers itself and its children only
    assert set(top.middle.getFullMetadata()) == {"top.middle", "top.middle.leaf"}
    top.middle.emptyMetadata()
    assert top.getFullMetadata()["top.middle.leaf"] == {}
    assert "runDuration" in top.getFullMetadata()["top"]
    top.emptyMetadata()
    assert all(not m for m in top.getFullMetadata().values())


def test_timer_records_even_on_error(caplog):
    leaf = LeafTask()
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(RuntimeError),
        leaf.timer("broken", logLevel=logging.INFO),
    ):
        raise RuntimeError("boom")
    assert "brokenDuration" in leaf.metadata
    assert "broken took" in caplog.text


def test_wrong_config_type_and_unknown_subtask():
    with pytest.raises(TypeError, match="LeafConfig"):
        LeafTask(config=MiddleConfig())
    with pytest.raises(TaskError, match="no subtask named 'nope'"):
        TopTask().makeSubtask("nope")
    with pytest.raises(NotImplementedError):
        Task().run()


def test_struct_and_errors():
    result = Struct(a=1, b="x")
    assert result.a == 1 and result.getDict() == {"a": 1, "b": "x"}
    assert result.get_dict() is not result.__dict__
    assert repr(result) == "Struct(a, b)"
    assert issubclass(NoWorkFound, TaskError)


def test_typed_results_read_like_structs():
    from dataclasses import dataclass

    from tasks.core.base import Result

    @dataclass
    class Counts(Result):
        n_new: int
        label: str = "x"

    result = Counts(3)
    assert result.n_new == 3 and result.label == "x"
    assert result.get_dict() == {"n_new": 3, "label": "x"} == result.getDict()
    result.get_dict()["n_new"] = 5
    assert result.n_new == 3
