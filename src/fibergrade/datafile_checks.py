"""Key and type checks shared by the loaders of TOML data files (standards, meat schemes).

A data file with a missing key, a key of the wrong type, or a key the loader does not know
(often a typo) is refused with the file, the place in it and the expected keys; the error
class is the caller's, so each kind of file keeps its own typed error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def require(
    d: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    error: type[Exception],
) -> Any:
    """``d[key]``, which must exist and be of ``kind`` (a bool is no number here)."""
    if key not in d:
        raise error(f"{where}: missing required key {key!r}")
    value = d[key]
    wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (isinstance(value, bool) and not wants_bool):
        raise error(f"{where}: {key!r} has the wrong type ({value!r})")
    return value


def refuse_unknown(
    d: Mapping[str, Any], allowed: set[str], where: str, error: type[Exception]
) -> None:
    """Raise ``error`` naming every key of ``d`` that is not in ``allowed``."""
    extra = sorted(set(d) - allowed)
    if extra:
        raise error(
            f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}"
        )
