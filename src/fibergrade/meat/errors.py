"""Typed errors of the meat grading and traceability layer (issue 7).

Problems in an imported file are :class:`fibergrade.errors.InputError` (file, line and what
was expected); the errors here cover what is not a line of a file.
"""

from __future__ import annotations

from fibergrade.errors import FibergradeError, StandardDefinitionError


class MeatSchemeError(StandardDefinitionError):
    """A meat grading scheme file is missing, malformed or unknown."""


class NothingToGradeError(FibergradeError):
    """The store holds no carcasses (or none of the ids asked for)."""

    exit_code = 3


class TraceNotFoundError(FibergradeError):
    """An id that is no animal, carcass, lot or certificate the store knows."""

    exit_code = 3
