"""Bearer JWT authentication and role checks (API.md "Auth").

Tokens carry ``sub`` (the user id), ``role`` and ``exp``. By default they are HS256 tokens signed
with the deployment's secret (what `ticketing token` prints); a deployment fronted by an outside
identity provider configures its public key instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from cluster.secrets import read_jwt_secret
from cluster.settings import Settings
from router.errors import ApiError

ROLES = frozenset({"buyer", "organizer", "validator", "admin"})
SUBJECT_LENGTH_MAX = 255
# Tolerated clock difference between the token issuer and this router.
CLOCK_SKEW_S = 30


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        if settings.jwt_public_key_file is not None:
            self.key: str | bytes = settings.jwt_public_key_file.read_bytes()
        else:
            self.key = settings.jwt_secret or read_jwt_secret(settings.resolved_data_dir)
        if not self.key:
            raise RuntimeError("no JWT secret: set TICKETING_JWT_SECRET or run `ticketing up` once")

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], leeway=CLOCK_SKEW_S,
                options={"require": ["sub", "exp"]},
            )
        except jwt.PyJWTError as error:
            raise ApiError(401, "UNAUTHENTICATED", f"invalid token: {error}",
                           headers={"WWW-Authenticate": "Bearer"}) from None
        subject, role = claims.get("sub"), claims.get("role")
        if not isinstance(subject, str) or not 0 < len(subject) <= SUBJECT_LENGTH_MAX:
            raise ApiError(401, "UNAUTHENTICATED", "token subject must be a non-empty string")
        if role not in ROLES:
            raise ApiError(401, "UNAUTHENTICATED", "token role is not one of " + ", ".join(sorted(ROLES)))
        return Principal(subject, role)


def issue_token(secret: str, subject: str, role: str, ttl_s: int, algorithm: str = "HS256") -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}")
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=algorithm)


def principal_from(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "UNAUTHENTICATED", "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier.verify(token.strip())


def require(*roles: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency that authenticates and checks the caller's role."""
    allowed = frozenset(roles)
    unknown = allowed - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    async def dependency(request: Request) -> Principal:
        principal = principal_from(request)
        if principal.role not in allowed:
            raise ApiError(403, "FORBIDDEN", f"role {principal.role!r} may not do this")
        return principal

    return dependency


# Route parameter types (module level, so FastAPI can resolve them under postponed annotations).
AnyRole = Annotated[Principal, Depends(require("buyer", "organizer", "validator", "admin"))]
Buyer = Annotated[Principal, Depends(require("buyer", "admin"))]
Organizer = Annotated[Principal, Depends(require("organizer", "admin"))]
Validator = Annotated[Principal, Depends(require("validator", "organizer", "admin"))]
