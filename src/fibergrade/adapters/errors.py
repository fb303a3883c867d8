"""Typed errors of the instrument layer (transports, scales, analysers, profiles, simulators).

Every class derives from :class:`fibergrade.errors.FibergradeError`, so the CLI turns them
into messages and exit codes; library code only raises. The split follows DESIGN.md ("Serial
faults (timeouts, garbage, unplugged adapter, overload, unstable weight) are distinct
errors") and ``shared/reference/scales.md``, which warns against the widely copied MT-SICS
driver that "swallow[s] every exception and return[s] None, so overload and instability look
the same".

Hierarchy::

    FibergradeError
      ProfileError                     instrument profile TOML refused (file, key)
      FaultSpecError                   simulator --faults text refused
      SimulatorSettingError            simulator setting refused (a NaN or negative load)
      InstrumentError                  anything an instrument did or failed to do
        TransportError
          PortOpenError                the port / URL cannot be opened
          InstrumentTimeout            nothing (complete) arrived before the deadline
          Disconnected                 adapter unplugged, EOF, EIO on a pty, socket closed
          ReplayMismatch               a replayed session diverges from its capture
            CaptureMismatch            the capture is of another kind or protocol (exit 2)
        FrameError                     garbage: bytes that are not a frame of the protocol
        ScaleError
          Overload / Underload         the device says so (MT ``S +``/``S -``, A&D ``OL`` ...)
          WeightOutOfRange             value outside [Min, Max] of the profile: never clipped
          UnitMismatch                 device unit differs from the profile's unit
          Unstable
            StabilityTimeout           no stable weight within the stability timeout
          CommandNotUnderstood         MT ``ES``, A&D ``EC,E1``, CAS ``?``
          NotExecutable                MT ``S I``/``EL``, A&D ``EC,E2``, CAS ``!``
          DeviceTransmissionError      MT ``ET``, A&D ``EC,E0``: the device saw garbage
          DeviceError                  any other status the device reports (SBI ``Err ##``)
        SampleError                    live analyser: one sample is unusable (sample, line)
          SampleChecksumError, SampleFrameError, SampleIndexGapError,
          SampleCountMismatchError, SampleIncompleteError, SampleValueError
"""

from __future__ import annotations

from fibergrade.errors import FibergradeError

#: exit code of every instrument error (1 generic, 2 input, 3 store are taken by errors.py)
INSTRUMENT_EXIT_CODE = 4


class ProfileError(FibergradeError):
    """An instrument profile (``instruments/*.toml``) is missing, malformed or inconsistent.

    ``path`` is the profile file and ``key`` the dotted key (``"serial.parity"``) at fault,
    or None when the problem concerns the whole file.
    """

    exit_code = 2

    def __init__(self, path: str, key: str | None, message: str) -> None:
        self.path = str(path)
        self.key = key
        self.message = message
        where = f"{self.path}: [{key}]" if key else self.path
        super().__init__(f"{where}: {message}")


class FaultSpecError(FibergradeError):
    """A simulator fault specification (``--faults noise=0.1,drift``) cannot be understood."""

    exit_code = 2


class SimulatorSettingError(FibergradeError):
    """A simulator setting that no device could have, such as a load of NaN or below zero
    (``fibergrade simulate --load``): refused when the simulator is built, not when a client
    asks for a weight."""

    exit_code = 2


class InstrumentError(FibergradeError):
    """Base class of everything an instrument did wrong or failed to do.

    ``source`` names where it happened: a port URL, a device path or a capture file.
    """

    exit_code = INSTRUMENT_EXIT_CODE

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}" if source else message)


class TransportError(InstrumentError):
    """The byte transport failed (as opposed to the bytes making no sense)."""


class PortOpenError(TransportError):
    """The port or URL cannot be opened (no such device, permission, refused connection)."""


class InstrumentTimeout(TransportError):
    """Nothing, or no complete frame, arrived before the caller's deadline.

    pyserial returns short reads on timeout without raising (scales.md, "pyserial without
    hardware"); the transport keeps its own deadline and raises this. ``partial`` holds the
    bytes of an incomplete frame received so far (they are discarded from the buffer).
    """

    def __init__(
        self, message: str, *, source: str | None = None, waited_s: float, partial: bytes = b""
    ) -> None:
        self.waited_s = waited_s
        self.partial = partial
        super().__init__(message, source=source)


class Disconnected(TransportError):
    """The adapter was unplugged or the peer went away (SerialException, EOF, EIO on a pty)."""


class ReplayMismatch(TransportError):
    """A driver replayed against a captured session sent bytes the capture does not hold."""


class CaptureMismatch(ReplayMismatch):
    """A capture recorded from another kind of instrument or another protocol than the one
    replaying it (its header's ``meta`` says so): refused before any byte is replayed, as
    a wrong input file (exit code 2), rather than read as garbage or as no samples."""

    exit_code = 2


class FrameError(InstrumentError):
    """Garbage: bytes that do not form a frame of the protocol. Nothing is guessed from them.

    ``frame`` holds the offending bytes and ``expected`` describes a valid frame.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        frame: bytes = b"",
        expected: str | None = None,
    ) -> None:
        self.frame = bytes(frame)
        self.expected = expected
        text = f"{message}: {self.frame!r}" if frame else message
        if expected:
            text += f" (expected {expected})"
        super().__init__(text, source=source)


# --------------------------------------------------------------------------- scales


class ScaleError(InstrumentError):
    """A scale reported a condition, or a reading was refused. ``scale_id`` names the scale."""

    def __init__(
        self, message: str, *, source: str | None = None, scale_id: str | None = None
    ) -> None:
        self.scale_id = scale_id
        parts = [f"scale {scale_id!r}"] if scale_id else []
        if source and source != scale_id:
            parts.append(f"on {source}")
        where = " ".join(parts)
        super().__init__(message, source=where or None)


class Overload(ScaleError):
    """The device reports overload (MT ``S +``, SBI ``H``, A&D ``OL,+``, CAS ``OL``)."""


class Underload(ScaleError):
    """The device reports underload (MT ``S -``, SBI ``L``, A&D ``OL,-``)."""


class WeightOutOfRange(ScaleError):
    """A weight outside [Min, Max] of the profile: refused, never clipped (scales.md)."""

    def __init__(
        self,
        value: float,
        unit: str,
        minimum: float,
        maximum: float,
        *,
        scale_id: str | None = None,
        source: str | None = None,
    ) -> None:
        self.value = value
        self.unit = unit
        self.minimum = minimum
        self.maximum = maximum
        side = "above Max" if value > maximum else "below Min"
        super().__init__(
            f"weight {value:g} {unit} is {side}; the scale weighs legally only within "
            f"[{minimum:g}, {maximum:g}] {unit}",
            scale_id=scale_id,
            source=source,
        )


class UnitMismatch(ScaleError):
    """The device reports a unit other than the one its profile declares."""


class Unstable(ScaleError):
    """The weight is not stable (device flag, or readings spanning more than one e)."""


class StabilityTimeout(Unstable):
    """No stable weight within the stability timeout (drifting load, vibration, jitter).

    ``span`` is the spread of the last readings in the unit of the scale and
    ``device_stable`` whether the device itself reported them stable.
    """

    def __init__(
        self,
        message: str,
        *,
        span: float | None,
        device_stable: bool,
        scale_id: str | None = None,
        source: str | None = None,
    ) -> None:
        self.span = span
        self.device_stable = device_stable
        super().__init__(message, scale_id=scale_id, source=source)


class CommandNotUnderstood(ScaleError):
    """The device did not understand the command (MT ``ES``, A&D ``EC,E1``, CAS ``?``)."""


class NotExecutable(ScaleError):
    """The command was understood but cannot be executed now (MT ``S I``/``EL``, CAS ``!``)."""


class DeviceTransmissionError(ScaleError):
    """The device received a faulty command (MT ``ET``, A&D ``EC,E0``: parity, framing)."""


class DeviceError(ScaleError):
    """Another error status reported by the device (SBI ``Err ##``, unknown A&D codes)."""


# --------------------------------------------------------------------------- analyser


class SampleError(InstrumentError):
    """One live-analyser sample is unusable; names the sample and the stream line.

    ``sample_id`` is None when the sample cannot be told (a garbled line);
    ``line_no`` is the 1-based number of the offending line in the stream;
    ``received`` counts the measurement lines of the sample accepted before the error
    (none of them is kept: a sample is stored whole or not at all).
    """

    kind = "sample error"

    def __init__(
        self,
        sample_id: str | None,
        line_no: int | None,
        reason: str,
        *,
        received: int = 0,
        line: bytes = b"",
        source: str | None = None,
    ) -> None:
        self.sample_id = sample_id
        self.line_no = line_no
        self.reason = reason
        self.received = received
        self.line = bytes(line)
        who = f"sample {sample_id!r}" if sample_id is not None else "unknown sample"
        where = f", line {line_no}" if line_no is not None else ""
        text = f"{who}{where}: {self.kind}: {reason}"
        if line:
            text += f": {self.line!r}"
        super().__init__(text, source=source)


class SampleChecksumError(SampleError):
    """A line's checksum does not match its content."""

    kind = "bad checksum"


class SampleFrameError(SampleError):
    """A line inside a sample is not a frame of the protocol (garbage, truncation)."""

    kind = "garbled line"


class SampleIndexGapError(SampleError):
    """A measurement index is missing, repeated or out of order."""

    kind = "index gap"


class SampleCountMismatchError(SampleError):
    """The end line's count differs from the number of measurements received."""

    kind = "count mismatch"


class SampleIncompleteError(SampleError):
    """No end line: timeout, or the next sample started first."""

    kind = "missing end line"


class SampleValueError(SampleError):
    """A physically impossible value (diameter outside (0, 200] um, bad curvature)."""

    kind = "impossible value"
