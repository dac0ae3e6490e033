"""Bearer JWT authentication and role checks (API.md "Auth").

Tokens carry ``sub`` (the user id), ``role`` and ``exp``. By default they are HS256 tokens signed
with the deployment's secret (what `ticketing token` prints); a deployment fronted by an outside
identity provider configures its public key instead.

A validator's token also carries ``events``, the ids of the events whose tickets it may check in
(`ticketing token --role validator --event ID`, repeatable); a validator token without the claim
may check in nothing. Organizers are scoped by ownership of the event instead, and admins are
global (`router/checkins_api.py` applies the scopes). The claim is ignored for other roles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard
from uuid import UUID

import jwt
import orjson

from cluster.secrets import read_jwt_secret
from cluster.settings import Settings
from router.edge import Incoming
from router.problems import ApiError
from router.schemas import unstorable_character

ROLES = frozenset({"buyer", "organizer", "validator", "admin"})
# Protocol constants: what a valid token is. They are not settings because every issuer
# (`ticketing token`, an outside identity provider) and every router must agree on them: a
# router with its own value would refuse tokens another accepts. The tolerated clock skew and
# the cache of verified tokens are settings (`jwt_clock_skew_s`, `token_cache_entries_max`).
# The `sub` claim, the user id every command and row carries: OpenID Connect Core §2 caps a
# subject at 255 ASCII characters, so no identity provider issues a longer one.
SUBJECT_LENGTH_MAX = 255
# Events one validator token may name: a gate team works a festival, not a catalogue. It also
# bounds the work of parsing a token.
TOKEN_EVENTS_MAX = 256
# The canonical text form of a UUID (8-4-4-4-12 hex digits); longer is not an event id.
UUID_CHARS_MAX = 36
CLAIMS = frozenset({"sub", "role", "exp", "iat", "events"})


def _unb64(text: str) -> bytes:
    if "=" in text:
        raise ValueError("JWT segments carry no padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    # The `events` claim: for a validator, the only events whose tickets it may check in.
    events: frozenset[UUID] = frozenset()


def parse_events_claim(value: object) -> frozenset[UUID] | None:
    """The `events` claim as event ids; None when malformed (not a list of at most
    TOKEN_EVENTS_MAX UUID strings). A token without the claim has the empty scope."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > TOKEN_EVENTS_MAX:
        return None
    events: set[UUID] = set()
    for item in value:
        if not isinstance(item, str) or len(item) > UUID_CHARS_MAX:
            return None
        try:
            events.add(UUID(item))
        except ValueError:
            return None
    return frozenset(events)


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        if settings.jwt_public_key_file is not None:
            self.key: str | bytes = settings.jwt_public_key_file.read_bytes()
        else:
            self.key = settings.jwt_secret or read_jwt_secret(settings.resolved_data_dir)
        if not self.key:
            raise RuntimeError("no JWT secret: set TICKETING_JWT_SECRET or run `ticketing up` once")
        self._key_bytes = self.key.encode() if isinstance(self.key, str) else self.key
        # Tolerated clock difference between the token issuer and this router.
        self.clock_skew_s = settings.jwt_clock_skew_s
        # Verified tokens remembered (see the setting `token_cache_entries_max` for why).
        self._verified_max = settings.token_cache_entries_max
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at_s = cached
            if time.time() < expires_at_s + self.clock_skew_s:
                return principal
            del self._verified[token]
        principal, expires_at_s = self._decode(token)
        if len(self._verified) >= self._verified_max:
            self._verified.clear()  # simplest bound: tokens are cheap to verify again
        self._verified[token] = (principal, expires_at_s)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        fast = self._decode_hs256(token) if self.algorithm == "HS256" and isinstance(self.key, str) else None
        return fast if fast is not None else self._decode_with_pyjwt(token)

    def _decode_hs256(self, token: str) -> tuple[Principal, float] | None:
        """The common case, checked strictly and ~10x faster than PyJWT's general path (measured:
        PyJWT was 14% of a hold's router CPU for first-seen tokens). Anything this path does not
        accept goes to PyJWT, which decides and explains the refusal."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = orjson.loads(_unb64(parts[0]))
            if not isinstance(header, dict) or header.get("alg") != "HS256" or set(header) - {"alg", "typ"}:
                return None
            signature = _unb64(parts[2])
            expected = hmac.new(self._key_bytes, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(signature, expected):
                return None
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(claims, dict) or not set(claims) <= CLAIMS:
            return None
        expires_at, issued_at = claims.get("exp"), claims.get("iat", 0)
        if not isinstance(expires_at, int | float) or not isinstance(issued_at, int | float):
            return None
        now = time.time()
        if expires_at + self.clock_skew_s <= now or issued_at - self.clock_skew_s > now:
            return None
        subject, role = claims.get("sub"), claims.get("role")
        if not _subject_ok(subject) or role not in ROLES:
            return None
        events = parse_events_claim(claims.get("events"))
        if events is None:
            return None
        return Principal(subject, str(role), events), float(expires_at)

    def _decode_with_pyjwt(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], leeway=self.clock_skew_s,
                options={"require": ["sub", "exp"]},
            )
        except jwt.PyJWTError as error:
            raise ApiError(401, "UNAUTHENTICATED", f"invalid token: {error}",
                           headers={"WWW-Authenticate": "Bearer"}) from None
        subject, role = claims.get("sub"), claims.get("role")
        if not _subject_ok(subject):
            raise ApiError(401, "UNAUTHENTICATED", f"token subject must be 1-{SUBJECT_LENGTH_MAX} characters of "
                           "one-line text (no control characters, surrogates or non-characters)")
        if role not in ROLES:
            raise ApiError(401, "UNAUTHENTICATED", "token role is not one of " + ", ".join(sorted(ROLES)))
        events = parse_events_claim(claims.get("events"))
        if events is None:
            raise ApiError(401, "UNAUTHENTICATED",
                           f"token events must be a list of at most {TOKEN_EVENTS_MAX} event ids")
        return Principal(subject, role, events), float(claims["exp"])


def _subject_ok(subject: object) -> TypeGuard[str]:
    """The user id every command and row carries: it must be storable (no NUL, no lone surrogate:
    the core and Postgres cannot take them), whoever signed the token."""
    return (isinstance(subject, str) and 0 < len(subject) <= SUBJECT_LENGTH_MAX
            and unstorable_character(subject, single_line=True) is None)


def issue_token(secret: str, subject: str, role: str, ttl_s: int, algorithm: str = "HS256",
                events: Sequence[str | UUID] = ()) -> str:
    """A signed token; `events` scopes a validator to those events (the `events` claim)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}")
    if len(events) > TOKEN_EVENTS_MAX:
        raise ValueError(f"a token may name at most {TOKEN_EVENTS_MAX} events")
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "role": role, "iat": now, "exp": now + ttl_s}
    if events:
        claims["events"] = sorted({str(UUID(str(event))) for event in events})
    return jwt.encode(claims, secret, algorithm=algorithm)


def principal_from(request: Incoming) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "UNAUTHENTICATED", "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier.verify(token.strip())


BUYERS = frozenset({"buyer", "admin"})
ORGANIZERS = frozenset({"organizer", "admin"})
VALIDATORS = frozenset({"validator", "organizer", "admin"})
ANY_ROLE = ROLES


def authorize(request: Incoming, roles: frozenset[str]) -> Principal:
    """The caller, if its token is valid and its role is one of `roles` (401 / 403 otherwise).

    Called at the top of each handler rather than declared as a FastAPI dependency: resolving
    dependencies was the largest cost of a request after routing (measured).
    """
    principal = principal_from(request)
    if principal.role not in roles:
        raise ApiError(403, "FORBIDDEN", f"role {principal.role!r} may not do this")
    return principal
