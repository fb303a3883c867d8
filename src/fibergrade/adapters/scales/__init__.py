"""Scale drivers: MT-SICS, Sartorius SBI, A&D and CAS CI (``shared/reference/scales.md``).

Use :func:`open_scale` with a profile and a port URL, then ``stable_weight()`` or
``immediate_weight()`` (a :class:`Weighing`), ``zero()``, ``tare()``::

    profile = load_profile("mt-sics-scale")
    with open_scale(profile, "/dev/ttyUSB0", scale_id="lab-balance-1") as scale:
        w = scale.stable_weight()
        print(w.value, w.unit, w.mode)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fibergrade.adapters.errors import ProfileError
from fibergrade.adapters.profiles import Profile
from fibergrade.adapters.scales.aandd import AndScale
from fibergrade.adapters.scales.base import Reading, ScaleBackend, Weighing, decimals_for
from fibergrade.adapters.scales.cas import CasScale
from fibergrade.adapters.scales.mtsics import MtSicsScale
from fibergrade.adapters.scales.sbi import SbiScale
from fibergrade.adapters.transport import Transport, open_transport

#: protocol name (as in profiles) -> driver class
DRIVERS: dict[str, type[ScaleBackend]] = {
    "mt-sics": MtSicsScale,
    "sbi": SbiScale,
    "and": AndScale,
    "cas": CasScale,
}


def make_scale(
    profile: Profile, transport: Transport, *, scale_id: str | None = None
) -> ScaleBackend:
    """The driver for ``profile`` on an already open ``transport`` (e.g. a replay)."""
    if profile.kind != "scale" or profile.scale is None:
        raise ProfileError(str(profile.path), "instrument.kind", "is not a scale profile")
    transport.check_capture("scale", profile.protocol)  # a replay of another protocol: refused
    return DRIVERS[profile.protocol](transport, profile.scale, scale_id=scale_id)


def open_scale(
    profile: Profile,
    url: str,
    *,
    scale_id: str | None = None,
    record_to: str | Path | None = None,
    meta: dict[str, Any] | None = None,
) -> ScaleBackend:
    """Open ``url`` with the profile's serial settings and return its driver.

    ``record_to`` writes a capture of the session (see :mod:`..transport`). The default
    ``scale_id`` is the profile's ``scale.id``, else the URL.
    """
    if profile.kind != "scale" or profile.scale is None:
        raise ProfileError(str(profile.path), "instrument.kind", "is not a scale profile")
    transport = open_transport(
        url,
        profile.serial,
        record_to=record_to,
        meta={
            "kind": profile.kind,
            "profile": profile.name,
            "protocol": profile.protocol,
            # the id the weighings are stored with, which a replay of the capture reuses
            "scale_id": scale_id or profile.scale.id or url,
            **(meta or {}),
        },
    )
    return make_scale(profile, transport, scale_id=scale_id)


__all__ = [
    "DRIVERS",
    "AndScale",
    "CasScale",
    "MtSicsScale",
    "Reading",
    "SbiScale",
    "ScaleBackend",
    "Weighing",
    "decimals_for",
    "make_scale",
    "open_scale",
]
