"""Signed ticket codes: what a QR code holds and what a gate verifies with no network (API.md).

A code is ``v1.<kid>.<payload>.<signature>``. ``kid`` names the Ed25519 key that signed it,
``payload`` is the compact binary record below and ``signature`` is the Ed25519 signature of the
ASCII bytes ``v1.<kid>.<payload>`` (everything before the last dot); payload and signature are
base64url without padding.

Payload byte layout (version 1, all integers big-endian)::

    offset  size  field
    0       1     payload format, 0x01
    1       16    ticket id (UUID bytes)
    17      16    event id (UUID bytes)
    33      4     issued at, uint32 seconds since the Unix epoch (good until 2106)
    37      1     place kind: 0x01 seat label, 0x02 GA section id
    38      1     place length L in bytes, 1..PLACE_BYTES_MAX
    39      L     place, UTF-8

No bytes may follow. A seat ``A-12-7`` gives a 45-byte payload, 60 base64url characters, and with
the 86-character signature and an 8-character kid a 159-character code (QR version 9 at level M).
The signature and the two UUIDs alone take 129 characters, so a shorter code would need a shorter
signature scheme or truncated ids; neither is worth it.

Errors: `verify` raises only `TicketCodeInvalid` (with a short ``reason``) for any input string;
`KeyRingError` means the key material itself is unusable (corrupt files, a bad keys document, or
signing with a verification-only ring) and is an operator problem, not a client one.

Keys live in ``<data_dir>/secrets/ticket_keys/``: ``<kid>.pem`` (PKCS8, 0600) per key and an
``active`` file naming the signing key. Rotation adds a key and points ``active`` at it; old keys
stay for verification. Retiring a key once every event it signed for is over is not done yet:
keys accumulate (one file each) until an operator removes them by hand.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import struct
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cluster.secrets import secrets_dir

CODE_VERSION = "v1"
PAYLOAD_FORMAT = 0x01
# A place label longer than this is a data bug, and every byte grows the QR code.
PLACE_BYTES_MAX = 64
# Longer inputs are rejected before any decoding work, so a scanner fed junk stays cheap.
CODE_CHARS_MAX = 512
KID_CHARS_MAX = 64
# 6 bytes of SHA-256 of the public key give an 8-character kid: short in the QR code, and a
# collision among the handful of keys a deployment ever holds is checked for when rotating.
KID_HASH_BYTES = 6
ED25519_SIGNATURE_BYTES = 64
ED25519_PUBLIC_KEY_BYTES = 32
ISSUED_AT_S_MAX = 2**32 - 1
ALGORITHM = "Ed25519"
KEYS_FOLDER = "ticket_keys"
ACTIVE_FILE = "active"
# A ring loaded from disk re-reads the folder when it meets an unknown kid (another process
# rotated), at most this often, so a flood of junk kids cannot turn into a flood of disk reads.
KEY_RELOAD_INTERVAL_S = 1.0

PlaceKind = Literal["seat", "section"]
_KIND_TO_BYTE: dict[str, int] = {"seat": 0x01, "section": 0x02}
_BYTE_TO_KIND: dict[int, PlaceKind] = {0x01: "seat", 0x02: "section"}
_HEADER = struct.Struct(">B16s16sIBB")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_KID = re.compile(rf"[A-Za-z0-9_-]{{1,{KID_CHARS_MAX}}}", re.ASCII)


class TicketCodeInvalid(Exception):
    """The code is not a valid ticket for any key we hold; ``reason`` says why (API 422 TICKET_INVALID)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyRingError(Exception):
    """The key material is unusable: corrupt key files, a bad keys document, or no signing key."""


@dataclass(frozen=True)
class TicketClaims:
    ticket_id: uuid.UUID
    event_id: uuid.UUID
    place: str
    place_kind: PlaceKind
    issued_at_s: int

    def __post_init__(self) -> None:
        # Checked here so that a claim that cannot be encoded never exists, on either side.
        if self.place_kind not in _KIND_TO_BYTE:
            raise ValueError(f"place_kind must be 'seat' or 'section', not {self.place_kind!r}")
        size = len(self.place.encode("utf-8", errors="strict"))
        if not 1 <= size <= PLACE_BYTES_MAX:
            raise ValueError(f"place must be 1..{PLACE_BYTES_MAX} UTF-8 bytes, got {size}")
        if not 0 <= self.issued_at_s <= ISSUED_AT_S_MAX:
            raise ValueError("issued_at_s must fit in an unsigned 32-bit integer")


def encode_payload(claims: TicketClaims) -> bytes:
    place = claims.place.encode("utf-8")
    header = _HEADER.pack(PAYLOAD_FORMAT, claims.ticket_id.bytes, claims.event_id.bytes,
                          claims.issued_at_s, _KIND_TO_BYTE[claims.place_kind], len(place))
    return header + place


def decode_payload(payload: bytes) -> TicketClaims:
    if len(payload) < _HEADER.size:
        raise TicketCodeInvalid("payload too short")
    fmt, ticket_id, event_id, issued_at_s, kind, size = _HEADER.unpack_from(payload)
    if fmt != PAYLOAD_FORMAT:
        raise TicketCodeInvalid("unknown payload format")
    if kind not in _BYTE_TO_KIND:
        raise TicketCodeInvalid("unknown place kind")
    if not 1 <= size <= PLACE_BYTES_MAX:
        raise TicketCodeInvalid("bad place length")
    end = _HEADER.size + size
    if len(payload) < end:
        raise TicketCodeInvalid("payload truncated")
    if len(payload) > end:
        raise TicketCodeInvalid("trailing bytes after payload")
    try:
        place = payload[_HEADER.size:end].decode("utf-8", errors="strict")
        return TicketClaims(uuid.UUID(bytes=ticket_id), uuid.UUID(bytes=event_id), place,
                            _BYTE_TO_KIND[kind], issued_at_s)
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise TicketCodeInvalid("bad place encoding") from error


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: only the alphabet, and only the canonical encoding.

    Rejecting non-canonical spellings (unused low bits set) keeps one ticket to one code string.
    """
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data


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
