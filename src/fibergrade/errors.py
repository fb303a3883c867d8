"""Typed errors raised by the library.

Library code raises these; only ``fibergrade.cli`` turns them into messages and exit codes.
Every error message names *where* the problem is (file and line, lot and fibre index, store
path) and *what was expected*, so a lab technician can fix the input without reading code.
"""

from __future__ import annotations

from pathlib import Path


class FibergradeError(Exception):
    """Base class of every error fibergrade raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code: int = 1


class _Located:
    """An error about one place in a file: ``path`` and ``line`` (1-based, counting the
    header and comment lines as a text editor does; None when the problem concerns the whole
    file), with the message ``path:line: message (expected ...)``."""

    def __init__(
        self,
        path: str | Path,
        line: int | None,
        message: str,
        *,
        expected: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        self.expected = expected
        where = f"{self.path}:{line}" if line is not None else self.path
        text = f"{where}: {message}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class InputError(_Located, FibergradeError):
    """Malformed or physically impossible input in a file, located as :class:`_Located`
    says."""

    exit_code = 2


class MeasurementError(FibergradeError):
    """A measurement array holds a value the core refuses (NaN, <= 0 um, > 200 um).

    Raised by the distribution core when arrays reach it without having been validated by a
    reader; names the lot and the index of the fibre within the lot.
    """

    exit_code = 2

    def __init__(self, lot_id: str, index: int, value: float, reason: str) -> None:
        self.lot_id = lot_id
        self.index = index
        self.value = value
        self.reason = reason
        super().__init__(f"lot {lot_id!r}, fibre {index}: diameter {value!r} um {reason}")


class DataModelError(FibergradeError):
    """Arrays handed to the core do not form a valid columnar lot table."""

    exit_code = 2


class StandardDefinitionError(FibergradeError):
    """A grading standard file is missing, malformed or unknown."""

    exit_code = 2


class StoreError(FibergradeError):
    """The store cannot do what was asked."""

    exit_code = 3


class StoreCorruptError(StoreError):
    """A committed segment or the manifest fails its integrity check."""


class LotNotFoundError(StoreError):
    """A lot id that is not in the store."""

    def __init__(self, lot_ids: list[str] | tuple[str, ...]) -> None:
        self.lot_ids = tuple(lot_ids)
        shown = ", ".join(repr(x) for x in self.lot_ids[:10])
        more = f" and {len(self.lot_ids) - 10} more" if len(self.lot_ids) > 10 else ""
        super().__init__(f"lot(s) not in the store: {shown}{more}")


class LotConflictError(StoreError):
    """An import would add a lot id that the store already holds from another source.

    Raw data is never rewritten, so a second measurement of a lot needs a new lot id.
    """


class StoredIdConflictError(_Located, StoreError):
    """A row of a file names an id the store already holds from an earlier file.

    The meat counterpart of :class:`LotConflictError` (a carcass or animal id imported
    before): stored records are never rewritten, so it is the store's refusal (exit code 3),
    not a fault of the file alone. ``path`` and ``line`` locate the row as in
    :class:`InputError`.
    """


class ReplayConflictError(StoreError):
    """A reading the store already holds (a replayed weighing; a sample replayed or sent
    again, the same raw lines) was stored for another subject, scale or lot than the run
    names now.

    Stored records are never rewritten, and storing the reading again would make one
    reading two, so nothing is stored for it: the subject or lot named now has no reading
    from this run. Like :class:`LotConflictError` it is a conflict with what the store
    holds (exit code 3). An acquisition reports it for that reading and goes on.
    """


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class ModelError(FibergradeError):
    """The screening model file is missing, of the wrong type, or altered.

    Never answered by a fallback: without the model a lot is not screened.
    """

    exit_code = 4
