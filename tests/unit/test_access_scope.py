"""Who may do what, in process: validator scopes in tokens, check-in input checked at the edge,
waiting-room tokens keyed by a secret of their own, and the secrets' file modes.

No server, no Ray: every request here must be answered by the router before it would reach a shard
(a request that got that far would fail with 503, there being no shard).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import stat
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cluster import secrets
from cluster.settings import Settings
from router.app import create_app
from router.auth import TOKEN_EVENTS_MAX, TokenVerifier, issue_token
from router.problems import ApiError
from router.queue_tokens import KEY_LABEL, QueueTokens
from router.tickets import KeyRing, TicketClaims

pytestmark = pytest.mark.unit

SECRET = "unit-test-secret-0123456789abcdef"
DATA_DIR = Path(tempfile.mkdtemp(prefix="ticketing-unit-scope-"))
EVENT_A, EVENT_B = uuid.uuid4(), uuid.uuid4()


def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    app = create_app(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


def bearer(role: str, events: list[uuid.UUID] | None = None, subject: str = "gate-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, subject, role, 60, events=events or ())}"}


def ticket_code(event_id: uuid.UUID) -> str:
    """A genuine code of `event_id`, signed with the keys the app under test verifies with."""
    create_app(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))  # creates the keys on first use
    claims = TicketClaims(uuid.uuid4(), event_id, "floor", "section", int(time.time()))
    return KeyRing.load_or_create(DATA_DIR).sign(claims)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return dict(body)


# Validator scopes --------------------------------------------------------------------------------


def test_events_claim_round_trips_on_both_verification_paths() -> None:
    """The strict HS256 fast path and PyJWT's path read the same scope from the same token."""
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))
    token = issue_token(SECRET, "gate-1", "validator", 60, events=[EVENT_A, str(EVENT_B)])
    assert verifier._decode_hs256(token) is not None
    for principal, _ in (verifier._decode_hs256(token), verifier._decode_with_pyjwt(token)):
        assert principal.events == {EVENT_A, EVENT_B}
    unscoped = issue_token(SECRET, "gate-1", "validator", 60)
    assert verifier.verify(unscoped).events == frozenset()


@pytest.mark.parametrize("events", ["not-a-list", [1], ["not-a-uuid"], [str(uuid.uuid4())] * (TOKEN_EVENTS_MAX + 1)],
                         ids=["string", "number", "not-uuid", "too-many"])
def test_malformed_events_claim_is_401(events: object) -> None:
    token = jwt.encode({"sub": "gate-1", "role": "validator", "exp": int(time.time()) + 60, "events": events},
                       SECRET, algorithm="HS256")
    problem(call("POST", "/v1/checkins", json={"code": "x", "gate": "n"},
                 headers={"Authorization": f"Bearer {token}"}), 401, "UNAUTHENTICATED")


def test_validator_of_another_event_is_refused_before_the_shard() -> None:
    """Refused by the router: with no shard to reach, getting further would have been a 503."""
    code = ticket_code(EVENT_B)
    for headers in (bearer("validator", [EVENT_A]), bearer("validator")):
        body = problem(call("POST", "/v1/checkins", json={"code": code, "gate": "north"}, headers=headers),
                       403, "FORBIDDEN")
        assert "--event" in body["detail"]
    problem(call("GET", f"/v1/events/{EVENT_B}/revocations", headers=bearer("validator", [EVENT_A])),
            403, "FORBIDDEN")


def test_validator_in_scope_gets_past_the_scope_check() -> None:
    """Negative control for the test above: the same request from a validator granted EVENT_B is not
    refused by the router; it goes on to the shard, which this in-process app does not have (503)."""
    code = ticket_code(EVENT_B)
    response = call("POST", "/v1/checkins", json={"code": code, "gate": "north"},
                    headers=bearer("validator", [EVENT_A, EVENT_B]))
    assert response.status_code == 503, response.text


# Check-in input at the edge ----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"code": "CODE", "gate": "north\x00"}, "gate"),
    ({"code": "CODE", "gate": "g" * 65}, "gate"),
    ({"code": "CODE", "gate": "tab\there"}, "gate"),
    ({"code": "CO\x00DE", "gate": "north"}, "code"),
], ids=["nul-gate", "long-gate", "control-gate", "nul-code"])
def test_unstorable_check_in_text_is_422_naming_the_field(body: dict[str, str], field: str) -> None:
    body = {key: value.replace("CODE", ticket_code(EVENT_A)) for key, value in body.items()}
    answer = problem(call("POST", "/v1/checkins", json=body, headers=bearer("validator", [EVENT_A])),
                     422, "VALIDATION_ERROR")
    assert answer["detail"].startswith(f"{field}:"), answer


@pytest.mark.parametrize("field", ["gate", "code"])
@pytest.mark.parametrize("encoding", ["escaped", "raw-utf8"])
def test_lone_surrogate_in_check_in_is_422_naming_the_field(field: str, encoding: str) -> None:
    """A lone surrogate has no UTF-8 form; pydantic refuses the whole body, the answer still names the field."""
    values = {"code": ticket_code(EVENT_A), "gate": "north"}
    values[field] = "x"
    text = f'{{"code": "{values["code"]}", "gate": "{values["gate"]}"}}'
    bad = "\\ud800" if encoding == "escaped" else "\ud800"
    raw = text.replace('"x"', f'"x{bad}"').encode("utf-8", "surrogatepass")
    answer = problem(call("POST", "/v1/checkins", content=raw, headers={
        **bearer("validator", [EVENT_A]), "content-type": "application/json"}), 422, "VALIDATION_ERROR")
    assert answer["detail"].startswith(f"{field}:"), answer


# Waiting-room tokens -----------------------------------------------------------------------------


def _mint(key: bytes, user_id: str, event_id: uuid.UUID, ttl_s: int = 600, quantity_max: int | None = 0) -> str:
    """An admission token made by hand with a raw HMAC key, in the format of router/queue_tokens.py
    (`quantity_max` None: the format before that field)."""
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    user_digest = hashlib.sha256(user_id.encode()).digest()[:16]
    expires_at = struct.pack(">I", int(time.time()) + ttl_s)
    quantity = b"" if quantity_max is None else struct.pack(">I", quantity_max)
    payload = event_id.bytes + expires_at + quantity + user_digest
    return f"{b64(payload)}.{b64(hmac.new(key, payload, hashlib.sha256).digest())}"


def _public_key_settings(data_dir: Path) -> Settings:
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_file = data_dir / "idp.pem"
    key_file.write_bytes(pem)
    return Settings(data_dir=data_dir, jwt_public_key_file=key_file, jwt_algorithm="EdDSA")


def test_queue_token_minted_with_the_empty_key_is_refused_under_a_public_key_jwt(tmp_path: Path) -> None:
    """With JWTs verified by a public key there is no JWT secret; the admission-token key used to be
    derived from that empty secret, so anyone could mint admission tokens."""
    app = create_app(_public_key_settings(tmp_path))
    tokens: QueueTokens = app.state.queue_tokens
    empty_key = hmac.new(b"", KEY_LABEL, hashlib.sha256).digest()
    forged = _mint(empty_key, "mallory", EVENT_A)
    assert not tokens.admits(forged, "mallory", EVENT_A)
    issued, _ = tokens.issue("alice", EVENT_A, 600)
    assert tokens.admits(issued, "alice", EVENT_A)
    # Negative control: the forgery is well made; the old key derivation accepts it.
    legacy = object.__new__(QueueTokens)
    legacy.key = empty_key
    assert legacy.admits(forged, "mallory", EVENT_A)


def test_queue_tokens_refuse_an_empty_or_short_secret() -> None:
    for secret in ("", b"", "short"):
        with pytest.raises(ValueError, match="queue token secret"):
            QueueTokens(secret)


def test_queue_tokens_do_not_use_the_jwt_secret(tmp_path: Path) -> None:
    """Even with an HS256 JWT secret, admission tokens have their own key."""
    app = create_app(Settings(jwt_secret=SECRET, data_dir=tmp_path))
    assert app.state.queue_tokens.key != QueueTokens(SECRET).key
    assert app.state.queue_tokens.key == QueueTokens(secrets.ensure_queue_token_secret(tmp_path)).key


# Secrets on disk ---------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_secrets_are_0600_in_a_0700_folder(tmp_path: Path) -> None:
    made = [secrets.ensure_jwt_secret(tmp_path), secrets.ensure_queue_token_secret(tmp_path),
            secrets.ensure_redis_password(tmp_path)]
    assert len(set(made)) == 3 and all(len(secret) >= 40 for secret in made)
    assert mode(tmp_path / "secrets") == 0o700
    for name in ("jwt_secret", "queue_token_secret", "redis_password"):
        assert mode(tmp_path / "secrets" / name) == 0o600, name
    assert secrets.ensure_redis_password(tmp_path) == made[2]  # generated once, then read


def test_a_secret_written_world_readable_by_an_older_version_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    (folder / "jwt_secret").write_text("old-secret-0123456789")
    os.chmod(folder / "jwt_secret", 0o644)
    assert secrets.ensure_jwt_secret(tmp_path) == "old-secret-0123456789"
    assert mode(folder / "jwt_secret") == 0o600 and mode(folder) == 0o700


def test_racing_processes_agree_on_one_generated_secret(tmp_path: Path) -> None:
    """Router workers start together; whoever links first wins and everyone reads that secret."""
    found: list[str] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        found.append(secrets.ensure_queue_token_secret(tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert [path.name for path in (tmp_path / "secrets").iterdir()] == ["queue_token_secret"]


def test_private_file_is_never_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    secrets.write_private_file(path, '{"pg_dsns": ["postgresql://…"]}')
    assert mode(path) == 0o600 and "pg_dsns" in path.read_text()


def test_token_verifier_rejects_a_scope_on_a_token_it_cannot_verify() -> None:
    """The scope is only as good as the signature: a validator cannot widen its own token."""
    token = issue_token(SECRET, "gate-1", "validator", 60, events=[EVENT_A])
    header, claims, signature = token.split(".")
    forged_claims = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(claims).replace(str(EVENT_A).encode(), str(EVENT_B).encode())).decode()
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))
    with pytest.raises(ApiError) as refused:
        verifier.verify(f"{header}.{forged_claims}.{signature}")
    assert refused.value.status == 401


@pytest.mark.parametrize("subject", ["mallory\x00", "\ud800", "two\nlines", "\ufffe"],
                         ids=["nul", "lone-surrogate", "line-break", "non-character"])
def test_a_subject_that_cannot_be_stored_is_401_on_both_verification_paths(subject: str) -> None:
    """The subject becomes the user id of every command and row: a NUL cannot be stored and a lone
    surrogate made the core raise mid-batch. Refused however the token was signed."""
    verifier = TokenVerifier(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))
    token = jwt.encode({"sub": subject, "role": "buyer", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert verifier._decode_hs256(token) is None
    with pytest.raises(ApiError) as refused:
        verifier._decode_with_pyjwt(token)
    assert (refused.value.status, refused.value.code) == (401, "UNAUTHENTICATED")
    assert verifier._decode_hs256(issue_token(SECRET, "mallory", "buyer", 60)) is not None  # the control


def test_a_queue_token_has_one_length_whoever_it_admits(tmp_path: Path) -> None:
    """The token carries a digest of the user id, not the id: a 255-character non-ASCII subject
    (the longest a token may carry) once made a token longer than any router accepts."""
    tokens = QueueTokens(secrets.ensure_queue_token_secret(tmp_path))
    for user in ("a", "é" * 255, "ü" * 255):
        token, _ = tokens.issue(user, EVENT_A, 600)
        assert len(token) == 98 and tokens.admits(token, user, EVENT_A)
        assert not tokens.admits(token, user + "x", EVENT_A)
        limited, _ = tokens.issue(user, EVENT_A, 600, quantity_max=100_000)  # the largest hold_quantity_max
        assert len(limited) == 98 and tokens.admission(limited, user, EVENT_A) == 100_000


def test_a_waiting_list_token_carries_its_quantity_and_cannot_be_widened(tmp_path: Path) -> None:
    """A waiting-list admission is for a number of tickets: the token says how many, under the MAC.
    Ordinary admissions say 0 (no limit); so do tokens of the format before the field (still
    accepted until they expire)."""
    tokens = QueueTokens(secrets.ensure_queue_token_secret(tmp_path))
    ordinary, _ = tokens.issue("alice", EVENT_A, 600)
    limited, _ = tokens.issue("alice", EVENT_A, 600, quantity_max=2)
    assert tokens.admission(ordinary, "alice", EVENT_A) == 0
    assert tokens.admission(limited, "alice", EVENT_A) == 2
    assert tokens.admission(limited, "bob", EVENT_A) is None and tokens.admission(limited, "alice", EVENT_B) is None
    # Widening the limit (to 0 = none), or cutting the field out, leaves the MAC of the limited token.
    mac = limited.split(".")[1]
    for quantity_max in (0, None):
        changed = _mint(tokens.key, "alice", EVENT_A, quantity_max=quantity_max).split(".")[0]
        assert tokens.admission(f"{changed}.{mac}", "alice", EVENT_A) is None
    # The control: both layouts admit when signed with the key; the old one without a limit.
    legacy = _mint(tokens.key, "alice", EVENT_A, quantity_max=None)
    assert len(legacy) == 92 and tokens.admission(legacy, "alice", EVENT_A) == 0
    assert tokens.admission(_mint(tokens.key, "alice", EVENT_A, quantity_max=3), "alice", EVENT_A) == 3
    assert tokens.admission(legacy, "alice", EVENT_A, now_s=time.time() + 601) is None
