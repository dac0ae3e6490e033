"""``ticketing verify CODE``: check a ticket code offline, exactly as a gate device does.

The public keys come from, in order: ``--keys`` (a JSON file in the ``GET /v1/ticket-keys`` shape,
or the http(s) URL of that endpoint, fetched once), else the deployment's own key ring under the
data folder. Exit status: 0 valid (the claims are printed), 1 invalid (``INVALID: <reason>``),
2 when no usable keys could be obtained — a gate must tell "this ticket is bad" apart from
"I cannot check tickets".
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from router.tickets import KeyRing, KeyRingError, TicketClaims, TicketCodeInvalid

KEYS_FETCH_TIMEOUT_S = 5.0
# The keys document lists a few 32-byte keys; anything much larger is not it.
KEYS_DOCUMENT_BYTES_MAX = 64 * 1024
EXIT_VALID, EXIT_INVALID, EXIT_NO_KEYS = 0, 1, 2


class KeysUnavailable(Exception):
    """No usable public keys: missing file, unreachable URL, or a document of the wrong shape."""


def add_verify_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    help_text = "verify a ticket code offline with the published public keys, as a gate does"
    parser = subparsers.add_parser("verify", help=help_text, description=help_text)
    parser.add_argument("code", metavar="CODE", help="the ticket code (the text inside the QR code)")
    parser.add_argument("--keys", default=None, metavar="FILE_OR_URL",
                        help="JSON file or http(s) URL of GET /v1/ticket-keys (default: the data folder's keys)")
    parser.add_argument("--data-dir", type=Path, default=None, help="deployment data folder (default .data)")
    parser.add_argument("--json", action="store_true", help="print the claims as one JSON object")
    parser.set_defaults(handler=cmd_verify)
    return parser


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        ring = _key_ring(args.keys, args.data_dir)
    except KeysUnavailable as error:
        print(f"ERROR: no usable ticket keys: {error}", file=sys.stderr)
        return EXIT_NO_KEYS
    try:
        claims = ring.verify(args.code.strip())
    except TicketCodeInvalid as error:
        print(f"INVALID: {error.reason}")
        return EXIT_INVALID
    fields = claims_fields(claims, kid=args.code.strip().split(".")[1])
    if args.json:
        print(json.dumps(fields))
    else:
        print("VALID")
        for name, value in fields.items():
            print(f"{name}: {value}")
    return EXIT_VALID


def claims_fields(claims: TicketClaims, *, kid: str) -> dict[str, str]:
    issued_at = datetime.datetime.fromtimestamp(claims.issued_at_s, tz=datetime.UTC)
    return {
        "ticket_id": str(claims.ticket_id),
        "event_id": str(claims.event_id),
        claims.place_kind: claims.place,
        "issued_at": issued_at.isoformat().replace("+00:00", "Z"),
        "kid": kid,
    }


def _key_ring(keys: str | None, data_dir: Path | None) -> KeyRing:
    try:
        if keys is None:
            return KeyRing.load(_data_dir(data_dir))
        document = _fetch(keys) if keys.startswith(("http://", "https://")) else _read(Path(keys))
        return KeyRing.from_public_keys(_key_list(document))
    except (KeyRingError, OSError) as error:  # OSError: an unreadable data folder
        raise KeysUnavailable(str(error)) from error


def _data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir.expanduser().resolve()
    from cluster.settings import Settings  # only here: reading settings is not needed with --keys

    return Settings.model_validate({}).resolved_data_dir


def _read(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(KEYS_DOCUMENT_BYTES_MAX + 1)
    except OSError as error:
        raise KeysUnavailable(f"cannot read {path}: {error.strerror or error}") from error
    return _parse(raw, str(path))


def _fetch(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=KEYS_FETCH_TIMEOUT_S) as response:
            raw = response.read(KEYS_DOCUMENT_BYTES_MAX + 1)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise KeysUnavailable(f"cannot fetch {url}: {error}") from error
    return _parse(raw, url)


def _parse(raw: bytes, source: str) -> Any:
    if len(raw) > KEYS_DOCUMENT_BYTES_MAX:
        raise KeysUnavailable(f"{source} is larger than {KEYS_DOCUMENT_BYTES_MAX} bytes")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise KeysUnavailable(f"{source} is not JSON") from error


def _key_list(document: Any) -> list[Any]:
    """The ``keys`` list of the endpoint's body; a bare list is accepted too."""
    keys = document.get("keys") if isinstance(document, dict) else document
    if not isinstance(keys, list):
        raise KeysUnavailable('expected {"keys": [...]} as served by GET /v1/ticket-keys')
    return keys
