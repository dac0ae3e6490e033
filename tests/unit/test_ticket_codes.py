"""Ticket codes: the exact format, every rejection reason, fuzzing, key persistence and rotation."""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import json
import multiprocessing
import re
import socket
import stat
import struct
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import router.tickets.keyring as keyring
from cluster.verify import add_verify_parser
from router.tickets import PLACE_BYTES_MAX, KeyRing, KeyRingError, TicketClaims, TicketCodeInvalid
from router.tickets.codes import b64url_encode, decode_payload, encode_payload

pytestmark = pytest.mark.unit

TICKET_ID = uuid.UUID("0b5c4a52-6f1e-4f7e-9d0a-2d7c1c1e9a01")
EVENT_ID = uuid.UUID("9e8f7a6b-5c4d-4e3f-8a1b-0c9d8e7f6a5b")
ISSUED_AT_S = 1_767_225_600  # 2026-01-01T00:00:00Z
SEAT = TicketClaims(TICKET_ID, EVENT_ID, "A-12-7", "seat", ISSUED_AT_S)
SIGNING_KEY = Ed25519PrivateKey.generate()
RING = KeyRing(SIGNING_KEY)


def forge(payload: bytes, key: Ed25519PrivateKey = SIGNING_KEY) -> str:
    """A correctly signed code around an arbitrary payload, to reach the payload checks."""
    ring = KeyRing(key)
    signed_text = f"v1.{ring.active_kid}.{b64url_encode(payload)}"
    return f"{signed_text}.{b64url_encode(key.sign(signed_text.encode('ascii')))}"


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_code_has_the_documented_format_and_signature() -> None:
    code = RING.sign(SEAT)
    version, kid, payload_text, signature_text = code.split(".")
    assert version == "v1"
    assert re.fullmatch(r"[A-Za-z0-9_-]{8}", kid)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", payload_text + signature_text)  # base64url, no "=" padding
    # Checked with the raw published key and cryptography directly, not through KeyRing.
    public = RING.public_keys()[0]
    assert public == {"kid": kid, "alg": "Ed25519", "public_key": public["public_key"]}
    raw_key = b64url_decode(public["public_key"])
    assert len(raw_key) == 32
    Ed25519PublicKey.from_public_bytes(raw_key).verify(b64url_decode(signature_text),
                                                       code.rsplit(".", 1)[0].encode("ascii"))
    assert len(code) == 159  # the length quoted in the docs for a typical seat


def test_payload_byte_layout() -> None:
    payload = b64url_decode(RING.sign(SEAT).split(".")[2])
    assert payload == (b"\x01" + TICKET_ID.bytes + EVENT_ID.bytes + struct.pack(">I", ISSUED_AT_S)
                       + b"\x01" + bytes([6]) + b"A-12-7")
    section = TicketClaims(TICKET_ID, EVENT_ID, "Parterre", "section", ISSUED_AT_S)
    assert encode_payload(section)[37:39] == b"\x02\x08"


@pytest.mark.parametrize("place", ["A-12-7", "Block Ü-3", "x" * PLACE_BYTES_MAX, "é" * (PLACE_BYTES_MAX // 2)])
@pytest.mark.parametrize("kind", ["seat", "section"])
def test_round_trip(place: str, kind: Any) -> None:
    claims = TicketClaims(uuid.uuid4(), uuid.uuid4(), place, kind, ISSUED_AT_S)
    assert RING.verify(RING.sign(claims)) == claims


@pytest.mark.parametrize(
    "fields",
    [
        {"place": "x" * (PLACE_BYTES_MAX + 1)},
        {"place": "é" * (PLACE_BYTES_MAX // 2 + 1)},  # 66 bytes in 33 characters: bytes count
        {"place": ""},
        {"place_kind": "row"},
        {"issued_at_s": -1},
        {"issued_at_s": 2**32},
    ],
)
def test_unencodable_claims_are_refused_at_signing_time(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"ticket_id": TICKET_ID, "event_id": EVENT_ID, "place": "A-1-1",
                            "place_kind": "seat", "issued_at_s": ISSUED_AT_S}
    with pytest.raises(ValueError):
        TicketClaims(**(base | fields))


def _flip_signature_bit(code: str, bit: int) -> str:
    head, signature_text = code.rsplit(".", 1)
    signature = bytearray(b64url_decode(signature_text))
    signature[bit // 8] ^= 1 << (bit % 8)
    return f"{head}.{b64url_encode(bytes(signature))}"


def _payload(place: bytes = b"A-1-1", kind: int = 1, size: int | None = None, fmt: int = 1) -> bytes:
    header = struct.pack(">B16s16sIBB", fmt, TICKET_ID.bytes, EVENT_ID.bytes, ISSUED_AT_S, kind,
                         len(place) if size is None else size)
    return header + place


OTHER_RING = KeyRing(Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("", "expected 4 dot-separated parts"),
        ("v1.a.b", "expected 4 dot-separated parts"),
        ("v1.a.b.c.d", "expected 4 dot-separated parts"),
        (RING.sign(SEAT).replace("v1.", "v2.", 1), "unsupported version"),
        ("v1." + "x" * 600, "too long"),
        (OTHER_RING.sign(SEAT), "unknown key id"),
        (RING.sign(SEAT)[:-1] + "*", "bad base64url"),
        (RING.sign(SEAT) + "=", "bad base64url"),  # padding is not allowed
        (RING.sign(SEAT)[:-2], "bad signature"),  # a 63-byte signature
        (_flip_signature_bit(RING.sign(SEAT), 0), "bad signature"),
        (forge(_payload()[:20]), "payload too short"),
        (forge(_payload(fmt=2)), "unknown payload format"),
        (forge(_payload(kind=3)), "unknown place kind"),
        (forge(_payload(size=0, place=b"")), "bad place length"),
        (forge(_payload(size=65, place=b"x" * 65)), "bad place length"),
        (forge(_payload(size=9)), "payload truncated"),
        (forge(_payload() + b"\x00"), "trailing bytes after payload"),
        (forge(_payload(place=b"\xff\xfe")), "bad place encoding"),
    ],
)
def test_each_rejection_has_its_reason(code: str, reason: str) -> None:
    with pytest.raises(TicketCodeInvalid) as raised:
        RING.verify(code)
    assert raised.value.reason == reason


def test_non_canonical_base64_is_rejected() -> None:
    """The last character of the signature carries unused low bits; setting them must not verify."""
    code = RING.sign(SEAT)
    last = code[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(last) ^ 1]  # same high bits, different unused low bit
    with pytest.raises(TicketCodeInvalid, match="base64url"):
        RING.verify(code[:-1] + sibling)


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(TicketCodeInvalid):
        RING.verify(text)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.data())
def test_mutated_codes_verify_to_the_same_claims_or_fail(data: st.DataObject) -> None:
    code = bytearray(RING.sign(SEAT).encode("ascii"))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(code)))
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if action == "insert":
            code.insert(position, byte)
        elif position < len(code):
            if action == "replace":
                code[position] = byte
            else:
                del code[position]
    text = bytes(code).decode("utf-8", errors="surrogateescape")
    with contextlib.suppress(TicketCodeInvalid):
        assert RING.verify(text) == SEAT


@given(st.integers(0, 64 * 8 - 1))
def test_any_flipped_signature_bit_fails(bit: int) -> None:
    with pytest.raises(TicketCodeInvalid):
        RING.verify(_flip_signature_bit(RING.sign(SEAT), bit))


def test_public_keys_build_a_verification_only_ring() -> None:
    gate = KeyRing.from_public_keys(RING.public_keys())
    assert gate.verify(RING.sign(SEAT)) == SEAT
    with pytest.raises(KeyRingError):
        gate.sign(SEAT)


@pytest.mark.parametrize(
    "documents",
    [
        [],
        [{"kid": "a.b", "alg": "Ed25519", "public_key": "A" * 43}],
        [{"kid": "abc", "alg": "RS256", "public_key": "A" * 43}],
        [{"kid": "abc", "alg": "Ed25519", "public_key": "A" * 42}],
        [{"kid": "abc", "alg": "Ed25519", "public_key": None}],
        ["not an object"],
    ],
)
def test_bad_public_key_documents_are_refused(documents: list[Any]) -> None:
    with pytest.raises(KeyRingError):
        KeyRing.from_public_keys(documents)


def test_first_use_creates_a_private_key_file(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path)
    folder = tmp_path / "secrets" / "ticket_keys"
    assert (folder / "active").read_text() == ring.active_kid
    key_file = folder / f"{ring.active_kid}.pem"
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    again = KeyRing.load_or_create(tmp_path)
    assert again.active_kid == ring.active_kid
    assert again.verify(ring.sign(SEAT)) == SEAT
    assert sorted(path.name for path in folder.iterdir()) == sorted(["active", key_file.name])


def test_rotation_keeps_old_codes_valid_and_lists_the_active_key_first(tmp_path: Path) -> None:
    old = KeyRing.load_or_create(tmp_path)
    old_code = old.sign(SEAT)
    new_kid = KeyRing.rotate(tmp_path)
    ring = KeyRing.load(tmp_path)
    assert ring.active_kid == new_kid != old.active_kid
    assert [key["kid"] for key in ring.public_keys()] == [new_kid, old.active_kid]
    assert ring.sign(SEAT).split(".")[1] == new_kid
    assert ring.verify(old_code) == SEAT
    assert KeyRing.from_public_keys(ring.public_keys()).verify(old_code) == SEAT


def test_a_ring_meeting_an_unknown_kid_rereads_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process rotated: its codes must verify here too, without a restart."""
    stale = KeyRing.load_or_create(tmp_path)
    KeyRing.rotate(tmp_path)
    new_code = KeyRing.load(tmp_path).sign(SEAT)
    # Negative control: within the reload interval the unknown kid is not looked up on disk.
    with pytest.raises(TicketCodeInvalid, match="unknown key id"):
        stale.verify(new_code)
    monkeypatch.setattr(keyring, "KEY_RELOAD_INTERVAL_S", 0.0)
    assert stale.verify(new_code) == SEAT


def test_load_refuses_missing_or_corrupt_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="no ticket keys"):
        KeyRing.load(tmp_path)
    ring = KeyRing.load_or_create(tmp_path)
    (tmp_path / "secrets" / "ticket_keys" / f"{ring.active_kid}.pem").write_bytes(b"garbage")
    with pytest.raises(KeyRingError, match="not a PEM"):
        KeyRing.load(tmp_path)


def _load_or_create_in_process(data_dir: Path, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=30)
    results.put(KeyRing.load_or_create(data_dir).active_kid)


def test_processes_racing_on_first_use_agree_on_one_key(tmp_path: Path) -> None:
    """Several router workers start at once on an empty folder: one key wins, every one uses it."""
    context = multiprocessing.get_context("spawn")
    racers = 4
    barrier, results = context.Barrier(racers), context.Queue()
    processes = [context.Process(target=_load_or_create_in_process, args=(tmp_path, barrier, results))
                 for _ in range(racers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    kids = {results.get(timeout=5) for _ in range(racers)}
    assert len(kids) == 1
    assert [path.name for path in (tmp_path / "secrets" / "ticket_keys").glob("*.pem")] == [f"{kids.pop()}.pem"]


def test_decode_payload_is_the_inverse_of_encode() -> None:
    assert decode_payload(encode_payload(SEAT)) == SEAT


def test_the_loser_of_a_first_use_race_adopts_the_winners_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic version of the race: another process publishes its key while we create ours."""
    real_write_new_key = keyring._write_new_key
    winners: list[KeyRing] = []

    def write_new_key_then_lose(folder: Path) -> str:
        kid = real_write_new_key(folder)
        monkeypatch.setattr(keyring, "_write_new_key", real_write_new_key)
        winners.append(KeyRing.load_or_create(tmp_path))  # the other process, finishing first
        return kid

    monkeypatch.setattr(keyring, "_write_new_key", write_new_key_then_lose)
    loser = KeyRing.load_or_create(tmp_path)
    folder = tmp_path / "secrets" / "ticket_keys"
    assert loser.active_kid == winners[0].active_kid == (folder / "active").read_text()
    assert sorted(path.name for path in folder.iterdir()) == sorted(["active", f"{loser.active_kid}.pem"])


# `ticketing verify`: what a gate device does, offline.


def _verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ticketing")
    add_verify_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verify", *argv])
    status = args.handler(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "ticket-keys.json"
    path.write_text(json.dumps({"keys": RING.public_keys()}))
    return path


def test_verify_prints_the_claims_of_a_valid_code(keys_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _verify([RING.sign(SEAT), "--keys", str(keys_file)], capsys)
    assert status == 0
    assert out.splitlines() == ["VALID", f"ticket_id: {TICKET_ID}", f"event_id: {EVENT_ID}", "seat: A-12-7",
                                "issued_at: 2026-01-01T00:00:00Z", f"kid: {RING.active_kid}"]
    status, out, _ = _verify([RING.sign(SEAT), "--keys", str(keys_file), "--json"], capsys)
    assert status == 0 and json.loads(out)["seat"] == "A-12-7"


def test_verify_reports_an_invalid_code(keys_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _verify([_flip_signature_bit(RING.sign(SEAT), 3), "--keys", str(keys_file)], capsys) \
        == (1, "INVALID: bad signature\n", "")
    assert _verify([OTHER_RING.sign(SEAT), "--keys", str(keys_file)], capsys) == (1, "INVALID: unknown key id\n", "")


@pytest.mark.parametrize("content", [None, "not json", '{"keys": "nope"}', '{"keys": []}'])
def test_verify_without_usable_keys_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             content: str | None) -> None:
    path = tmp_path / "keys.json"
    if content is not None:
        path.write_text(content)
    status, out, err = _verify([RING.sign(SEAT), "--keys", str(path)], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("ERROR: no usable ticket keys")


def test_verify_with_the_data_folder_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = KeyRing.load_or_create(tmp_path).sign(SEAT)
    assert _verify([code, "--data-dir", str(tmp_path)], capsys)[0] == 0
    assert _verify([code, "--data-dir", str(tmp_path / "empty")], capsys)[0] == 2


def test_verify_fetches_the_keys_endpoint_once(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps({"keys": RING.public_keys()}).encode()
    requests: list[str] = []

    class KeysHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeysHandler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/v1/ticket-keys"
            assert _verify([RING.sign(SEAT), "--keys", url], capsys)[0] == 0
        finally:
            server.shutdown()
            thread.join(timeout=5)
    assert requests == ["/v1/ticket-keys"]


def test_verify_reports_an_unreachable_keys_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, _, err = _verify([RING.sign(SEAT), "--keys", f"http://127.0.0.1:{port}/v1/ticket-keys"], capsys)
    assert status == 2 and "cannot fetch" in err
