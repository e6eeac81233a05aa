"""The task framework: configurable, nestable units of pipeline work.

The shape follows the Rubin ``lsst.pipe.base.Task`` documents that our
users know (``makeSubtask``, ``getTaskDict``, ``getName``, ``getFullName``,
``getFullMetadata``, ``emptyMetadata``, ``timer``), built on plain Python:
a task's configuration is a pydantic model with a description on every
field, metadata is a nested dictionary, and logging goes through
:mod:`logging`.

A task declares its configuration class in ``ConfigClass`` and the name it
is known by in ``_DefaultName``.  Subtasks are declared by the parent's
configuration: a field holding a :class:`TaskConfig` of the subtask, and an
entry in the parent's ``_subtask_classes`` naming the class to build.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Task", "TaskConfig", "TaskError", "NoWorkFound", "Result", "Struct"]


class TaskError(Exception):
    """Base class of errors raised by pipeline tasks."""


class NoWorkFound(TaskError):  # noqa: N818 - name follows the Rubin stack
    """Raised when a task has nothing to do for its inputs.

    This is not a failure of the task: the inputs were valid but empty for
    this task (no overlapping patches, no isolated stars, ...).  Callers such
    as the per-visit pipeline treat it as "skip this step".
    """


class TaskConfig(BaseModel):
    """Base configuration of a task.

    Subclasses declare their fields with ``pydantic.Field(default,
    description=...)``.  Unknown fields are refused and assignments are
    validated, so a typo in a configuration is an error, not a silent no-op.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Struct:
    """A plain result container with attribute access.

    Parameters
    ----------
    **kwargs
        Named results; each becomes an attribute.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def get_dict(self) -> dict[str, Any]:
        """Return the results as a new dictionary."""
        return dict(self.__dict__)

    getDict = get_dict  # the Rubin spelling

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.__dict__))
        return f"Struct({names})"


class Result:
    """Base of typed task results: subclasses are dataclasses with one field per result.

    Reads like a `Struct` (attribute access, ``get_dict``), but the fields,
    their types and their documentation are declared once, in the class.
    """

    def get_dict(self) -> dict[str, Any]:
        """Return the results as a new dictionary (values not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    getDict = get_dict  # the Rubin spelling


class Task:
    """Base class of all pipeline tasks.

    Parameters
    ----------
    config : `TaskConfig`, optional
        Configuration of this task; defaults to ``ConfigClass()``.
    name : `str`, optional
        Name of the task; defaults to ``_DefaultName``.  Required for a
        subtask (the name of its field in the parent's configuration).
    parentTask : `Task`, optional
        The task that owns this one.
    log : `logging.Logger`, optional
        Logger; defaults to one named after the task's full name.
    """

    ConfigClass: ClassVar[type[TaskConfig]] = TaskConfig
    _DefaultName: ClassVar[str] = "task"
    _subtask_classes: ClassVar[dict[str, type[Task]]] = {}

    def __init__(
        self,
        config: TaskConfig | None = None,
        name: str | None = None,
        parentTask: Task | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        if config is None:
            config = self.ConfigClass()
        elif not isinstance(config, self.ConfigClass):
            raise TypeError(
                f"{type(self).__name__} needs a {self.ConfigClass.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self._name = name if name is not None else self._DefaultName
        self._parent = parentTask
        if parentTask is None:
            self._full_name = self._name
            self._task_dict: dict[str, Task] = {}
        else:
            self._full_name = f"{parentTask.getFullName()}.{self._name}"
            self._task_dict = parentTask._task_dict
        self._task_dict[self._full_name] = self
        self.metadata: dict[str, Any] = {}
        self.log = log if log is not None else logging.getLogger(f"tasks.{self._full_name}")

    @classmethod
    def makeField(cls, doc: str) -> Any:
        """Return a configuration field holding this task's configuration.

        Use it in a parent's configuration to declare a subtask, e.g.
        ``association: AssociationConfig = AssociationTask.makeField("...")``.

        Parameters
        ----------
        doc : `str`
            Description of the subtask field.

        Returns
        -------
        field : `pydantic.fields.FieldInfo`
            A field whose default is a fresh ``ConfigClass()``.
        """
        return Field(default_factory=cls.ConfigClass, description=doc)

    # -- names ---------------------------------------------------------
    def getName(self) -> str:
        """Return the name of the task."""
        return self._name

    def getFullName(self) -> str:
        """Return the hierarchical name: parent names joined by dots."""
        return self._full_name

    # -- subtasks ------------------------------------------------------
    def makeSubtask(self, name: str, **keyArgs: Any) -> Task:
        """Create a subtask as the attribute ``name`` of this task.

        Parameters
        ----------
        name : `str`
            Name of the subtask: a key of ``_subtask_classes`` and a field of
            this task's configuration holding the subtask's configuration.
        **keyArgs
            Extra arguments for the subtask's constructor.

        Returns
        -------
        subtask : `Task`
            The new subtask (also set as ``self.<name>``).
        """
        try:
            task_class = self._subtask_classes[name]
        except KeyError:
            raise TaskError(f"{type(self).__name__} declares no subtask named {name!r}") from None
        sub_config = getattr(self.config, name, None)
        subtask = task_class(config=sub_config, name=name, parentTask=self, **keyArgs)
        setattr(self, name, subtask)
        return subtask

    def getTaskDict(self) -> dict[str, Task]:
        """Return a shallow copy of the full-name → task dictionary of the hierarchy."""
        return dict(self._task_dict)

    # -- metadata ------------------------------------------------------
    def getFullMetadata(self) -> dict[str, dict[str, Any]]:
        """Return the metadata of every task in the hierarchy, keyed by full name."""
        prefix = self._full_name
        return {
            full_name: dict(task.metadata)
            for full_name, task in self._task_dict.items()
            if full_name == prefix or full_name.startswith(prefix + ".")
        }

    def emptyMetadata(self) -> None:
        """Empty (clear) the metadata of this task and all its subtasks."""
        prefix = self._full_name
        for full_name, task in self._task_dict.items():
            if full_name == prefix or full_name.startswith(prefix + "."):
                task.metadata.clear()

    @contextmanager
    def timer(self, name: str, logLevel: int = logging.DEBUG) -> Iterator[None]:
        """Time a block of code and record it in the metadata.

        Records ``{name}StartUtc``, ``{name}EndUtc`` (ISO strings),
        ``{name}StartCpuTime``/``{name}EndCpuTime`` and ``{name}Duration``
        (wall seconds) in this task's metadata, and logs the duration.

        Parameters
        ----------
        name : `str`
            Name of the timed block.
        logLevel : `int`, optional
            Level at which the duration is logged.
        """
        self.metadata[f"{name}StartUtc"] = datetime.now(UTC).isoformat()
        self.metadata[f"{name}StartCpuTime"] = time.process_time()
        start = time.perf_counter()
        try:
            yield
        finally:
            duration = time.perf_counter() - start
            self.metadata[f"{name}EndUtc"] = datetime.now(UTC).isoformat()
            self.metadata[f"{name}EndCpuTime"] = time.process_time()
            self.metadata[f"{name}Duration"] = duration
            self.log.log(logLevel, "%s took %.3f s", name, duration)

    def run(self, *args: Any, **kwargs: Any) -> Struct:
        """Run the task; subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")
