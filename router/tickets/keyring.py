"""The Ed25519 key ring that signs and verifies ticket codes (format: router/tickets/codes.py).

Errors: `verify` raises only `TicketCodeInvalid` (with a short ``reason``) for any input string;
`KeyRingError` means the key material itself is unusable (corrupt files, a bad keys document, or
signing with a verification-only ring) and is an operator problem, not a client one.

Keys live in ``<data_dir>/secrets/ticket_keys/``: ``<kid>.pem`` (PKCS8, 0600) per key and an
``active`` file naming the signing key. Rotation adds a key and points ``active`` at it; old keys
stay for verification. Retiring a key once every event it signed for is over is not done yet:
keys accumulate (one file each) until an operator removes them by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cluster.secrets import secrets_dir
from router.tickets.codes import (
    CODE_CHARS_MAX,
    CODE_VERSION,
    TicketClaims,
    TicketCodeInvalid,
    b64url_decode,
    b64url_encode,
    decode_payload,
    encode_payload,
)

KID_CHARS_MAX = 64
# 6 bytes of SHA-256 of the public key give an 8-character kid: short in the QR code, and a
# collision among the handful of keys a deployment ever holds is checked for when rotating.
KID_HASH_BYTES = 6
ED25519_SIGNATURE_BYTES = 64
ED25519_PUBLIC_KEY_BYTES = 32
ALGORITHM = "Ed25519"
KEYS_FOLDER = "ticket_keys"
ACTIVE_FILE = "active"
# A ring loaded from disk re-reads the folder when it meets an unknown kid (another process
# rotated), at most this often, so a flood of junk kids cannot turn into a flood of disk reads.
KEY_RELOAD_INTERVAL_S = 1.0
_KID = re.compile(rf"[A-Za-z0-9_-]{{1,{KID_CHARS_MAX}}}", re.ASCII)


class KeyRingError(Exception):
    """The key material is unusable: corrupt key files, a bad keys document, or no signing key."""


def kid_for(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64url_encode(hashlib.sha256(raw).digest()[:KID_HASH_BYTES])


class KeyRing:
    """Ed25519 keys by kid: at most one active signing key, plus older keys kept to verify.

    A ring loaded from a data folder (`load`, `load_or_create`) can sign; one built with
    `from_public_keys` (what an offline gate holds) can only verify.
    """

    def __init__(self, active: Ed25519PrivateKey | None, verification_keys: Iterable[Ed25519PublicKey] = (),
                 *, kids: Iterable[str] | None = None) -> None:
        self._signing_key = active
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.active_kid: str | None = None
        if active is not None:
            self.active_kid = kid_for(active.public_key())
            self._keys[self.active_kid] = active.public_key()
        keys = list(verification_keys)
        names = list(kids) if kids is not None else [kid_for(key) for key in keys]
        if len(names) != len(keys):
            raise KeyRingError("one kid per verification key")
        for kid, key in zip(names, keys, strict=True):
            if not _KID.fullmatch(kid):
                raise KeyRingError(f"bad kid {kid!r}")
            self._keys.setdefault(kid, key)
        self._source_dir: Path | None = None
        self._reloaded_at_s = time.monotonic()

    @classmethod
    def from_public_keys(cls, documents: Iterable[Mapping[str, Any]]) -> KeyRing:
        """A verification-only ring from the ``keys`` list of ``GET /v1/ticket-keys``."""
        kids: list[str] = []
        keys: list[Ed25519PublicKey] = []
        for document in documents:
            if not isinstance(document, Mapping):
                raise KeyRingError("each key must be an object")
            kid, alg, encoded = document.get("kid"), document.get("alg"), document.get("public_key")
            if not isinstance(kid, str) or not _KID.fullmatch(kid):
                raise KeyRingError(f"bad kid {kid!r}")
            if alg != ALGORITHM:
                raise KeyRingError(f"key {kid}: unsupported alg {alg!r}")
            try:
                raw = b64url_decode(encoded) if isinstance(encoded, str) else b""
                if len(raw) != ED25519_PUBLIC_KEY_BYTES:
                    raise ValueError("wrong length")
                keys.append(Ed25519PublicKey.from_public_bytes(raw))
            except ValueError as error:
                raise KeyRingError(f"key {kid}: bad public_key") from error
            kids.append(kid)
        if not keys:
            raise KeyRingError("no keys")
        return cls(None, keys, kids=kids)

    @classmethod
    def load(cls, data_dir: Path) -> KeyRing:
        """The deployment's ring from ``<data_dir>/secrets/ticket_keys``; `KeyRingError` if absent."""
        folder = data_dir / "secrets" / KEYS_FOLDER
        try:
            active_kid = (folder / ACTIVE_FILE).read_text().strip()
        except FileNotFoundError as error:
            raise KeyRingError(f"no ticket keys under {folder}") from error
        keys = _read_keys(folder)
        if active_kid not in keys:
            raise KeyRingError(f"active ticket key {active_kid!r} has no key file in {folder}")
        ring = cls(keys.pop(active_kid), [key.public_key() for key in keys.values()], kids=list(keys))
        ring._source_dir = data_dir
        return ring

    @classmethod
    def load_or_create(cls, data_dir: Path) -> KeyRing:
        """`load`, creating the first key on first use; safe when several processes race to do it."""
        folder = _keys_folder(data_dir)
        if not (folder / ACTIVE_FILE).exists():
            kid = _write_new_key(folder)
            temporary = _write_temporary(folder, kid.encode("ascii"))
            try:
                # link() fails if `active` exists, unlike rename(): exactly one racer wins, and the
                # file appears complete. A loser's key never signed anything, so it is removed.
                os.link(temporary, folder / ACTIVE_FILE)
            except FileExistsError:
                (folder / f"{kid}.pem").unlink(missing_ok=True)
            finally:
                temporary.unlink()
        return cls.load(data_dir)

    @classmethod
    def rotate(cls, data_dir: Path) -> str:
        """Create a new active key and return its kid; older keys stay for verification.

        Running processes keep signing with the key they loaded until they `reload` (or restart);
        that is harmless, because the old key still verifies.
        """
        folder = _keys_folder(data_dir)
        kid = _write_new_key(folder)
        os.replace(_write_temporary(folder, kid.encode("ascii")), folder / ACTIVE_FILE)
        return kid

    def reload(self) -> None:
        """Re-read the keys from the data folder this ring was loaded from."""
        if self._source_dir is None:
            raise KeyRingError("this key ring was not loaded from a data folder")
        fresh = KeyRing.load(self._source_dir)
        self._signing_key, self._keys, self.active_kid = fresh._signing_key, fresh._keys, fresh.active_kid
        self._reloaded_at_s = time.monotonic()

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def public_keys(self) -> list[dict[str, str]]:
        """Exactly the items of ``GET /v1/ticket-keys``, the active key first."""
        return [{"kid": kid, "alg": ALGORITHM, "public_key": b64url_encode(_raw_public(key))}
                for kid, key in self._keys.items()]

    def sign(self, claims: TicketClaims) -> str:
        if self._signing_key is None or self.active_kid is None:
            raise KeyRingError("this key ring holds no signing key (verification only)")
        signed_text = f"{CODE_VERSION}.{self.active_kid}.{b64url_encode(encode_payload(claims))}"
        signature = self._signing_key.sign(signed_text.encode("ascii"))
        return f"{signed_text}.{b64url_encode(signature)}"

    def verify(self, code: str) -> TicketClaims:
        """The claims of a valid code; `TicketCodeInvalid` for anything else, never another error."""
        if not isinstance(code, str):
            raise TicketCodeInvalid("not a string")
        if len(code) > CODE_CHARS_MAX:
            raise TicketCodeInvalid("too long")
        parts = code.split(".")
        if len(parts) != 4:
            raise TicketCodeInvalid("expected 4 dot-separated parts")
        version, kid, payload_text, signature_text = parts
        if version != CODE_VERSION:
            raise TicketCodeInvalid("unsupported version")
        key = self._lookup(kid)
        try:
            payload = b64url_decode(payload_text)
            signature = b64url_decode(signature_text)
        except ValueError as error:
            raise TicketCodeInvalid("bad base64url") from error
        if len(signature) != ED25519_SIGNATURE_BYTES:
            raise TicketCodeInvalid("bad signature")
        try:
            # kid matched a known kid and the rest is base64url, so the text is ASCII.
            key.verify(signature, f"{version}.{kid}.{payload_text}".encode("ascii"))
        except InvalidSignature as error:
            raise TicketCodeInvalid("bad signature") from error
        # Only signed bytes are parsed: a forged payload never reaches the decoder.
        return decode_payload(payload)

    def _lookup(self, kid: str) -> Ed25519PublicKey:
        key = self._keys.get(kid)
        if key is None and self._may_reload():
            self._reloaded_at_s = time.monotonic()  # also when the reload fails: stay rate limited
            # A broken folder must not turn a scan into a 500: keep serving with the keys we have.
            with contextlib.suppress(KeyRingError, OSError, ValueError):
                self.reload()
            key = self._keys.get(kid)
        if key is None:
            raise TicketCodeInvalid("unknown key id")
        return key

    def _may_reload(self) -> bool:
        return self._source_dir is not None and time.monotonic() - self._reloaded_at_s >= KEY_RELOAD_INTERVAL_S


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _keys_folder(data_dir: Path) -> Path:
    folder = secrets_dir(data_dir) / KEYS_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _write_temporary(folder: Path, data: bytes) -> Path:
    """A fully written, fsynced 0600 file with a unique name, ready to be renamed or linked."""
    path = folder / f".tmp-{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _write_new_key(folder: Path) -> str:
    key = Ed25519PrivateKey.generate()
    kid = kid_for(key.public_key())
    if (folder / f"{kid}.pem").exists():
        raise KeyRingError(f"kid collision on {kid}; rotate again")  # 2**-48 per pair of keys
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    os.replace(_write_temporary(folder, pem), folder / f"{kid}.pem")
    return kid


def _read_keys(folder: Path) -> dict[str, Ed25519PrivateKey]:
    """Every key file, newest first (so `public_keys` lists recent keys before old ones)."""
    found: list[tuple[float, str, Ed25519PrivateKey]] = []
    for path in folder.glob("*.pem"):
        try:
            pem, modified_s = path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            continue  # a racer's discarded key, removed between glob() and read
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except ValueError as error:
            raise KeyRingError(f"{path}: not a PEM private key") from error
        if not isinstance(key, Ed25519PrivateKey) or kid_for(key.public_key()) != path.stem:
            raise KeyRingError(f"{path}: not the Ed25519 key its name says")
        found.append((modified_s, path.stem, key))
    found.sort(key=lambda item: (-item[0], item[1]))
    return {kid: key for _, kid, key in found}
