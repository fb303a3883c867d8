"""The lab's Ed25519 key pair (``cryptography``).

``fibergrade keys init`` writes ``lab.key`` (PKCS#8 PEM, created with mode 0600, optionally
encrypted with a passphrase) and ``lab.pub`` (SubjectPublicKeyInfo PEM). The private key is
never written inside a store directory, since stores are handed to auditors. A key is named
by its fingerprint: the SHA-256 of the raw 32-byte public key, in hex.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fibergrade.errors import FibergradeError

PRIVATE_NAME = "lab.key"
PUBLIC_NAME = "lab.pub"
PASSPHRASE_ENV = "FIBERGRADE_KEY_PASSPHRASE"


class KeyFileError(FibergradeError):
    """A key file is missing, unreadable, of the wrong kind, or would be misplaced."""

    exit_code = 2


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _inside_store(path: Path) -> Path | None:
    """The store directory ``path`` lies in, if any (a folder with segments/ or manifest)."""
    p = path.resolve()
    for parent in (p, *p.parents):
        if (parent / "manifest.json").exists() or (parent / "segments").is_dir():
            return parent
    return None


def init_keys(directory: str | Path, passphrase: str | None = None) -> tuple[Path, Path, str]:
    """Create a new key pair in ``directory``; refuses to overwrite or to write in a store."""
    d = Path(directory)
    store = _inside_store(d)
    if store is not None:
        raise KeyFileError(
            f"{d} lies inside the store {store}; the private key must never be written into "
            "a store (stores are handed to auditors). Choose another --dir."
        )
    d.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = d / PRIVATE_NAME, d / PUBLIC_NAME
    for p in (priv_path, pub_path):
        if p.exists():
            raise KeyFileError(f"{p} exists already; fibergrade never overwrites a key")
    key = Ed25519PrivateKey.generate()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(priv_path, 0o600)  # whatever the umask
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv_path, pub_path, fingerprint(key)


def load_private_key(path: str | Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """Load ``lab.key``; the passphrase may also come from $FIBERGRADE_KEY_PASSPHRASE."""
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{p}: no private key file (create one with: fibergrade keys init)")
    pw = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read the private key ({exc.strerror or exc})") from None
    try:
        key: Any = serialization.load_pem_private_key(
            data, password=pw.encode("utf-8") if pw else None
        )
    except TypeError as exc:
        # cryptography raises TypeError both ways: no password for an encrypted key, or a
        # password for a key that is not encrypted
        if not pw:
            raise KeyFileError(
                f"{p}: the key is passphrase-protected; give --passphrase or set {PASSPHRASE_ENV}"
            ) from exc
        if passphrase is not None:
            raise KeyFileError(
                f"{p}: the key is not passphrase-protected; give no --passphrase"
            ) from exc
        # a passphrase in the environment, meant for other keys: this one needs none
        return load_private_key(p, "")
    except ValueError as exc:
        raise KeyFileError(f"{p}: cannot load the private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{p}: no public key file")
    try:
        key: Any = serialization.load_pem_public_key(p.read_bytes())
    except ValueError as exc:
        raise KeyFileError(f"{p}: cannot load the public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{p}: not an Ed25519 public key")
    return key
