"""Per-deployment secrets generated under ``<data-dir>/secrets`` (folder 0700, files 0600).

- ``jwt_secret``: the HS256 key of bearer tokens, unless ``TICKETING_JWT_SECRET`` or a public key
  is configured.
- ``queue_token_secret``: the HMAC key of waiting-room admission tokens, unless
  ``TICKETING_QUEUE_TOKEN_SECRET`` is set. It is its own secret rather than one derived from the
  JWT key: a deployment that verifies JWTs with a public key has no JWT secret, and deriving from
  an empty one made admission tokens forgeable by anyone.
- ``redis_password``: the ``requirepass`` of the embedded Redis, which every client reaches through
  the URL the supervisor records (``redis://:<password>@127.0.0.1:<port>/0``).

Anyone who can read these files can mint tokens or talk to Redis, so they are created with mode
0600 before a byte is written, and an existing file is tightened to 0600 when it is read.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_BYTES = 32
JWT_SECRET_FILE = "jwt_secret"
QUEUE_TOKEN_SECRET_FILE = "queue_token_secret"
REDIS_PASSWORD_FILE = "redis_password"


def secrets_dir(data_dir: Path) -> Path:
    path = data_dir / "secrets"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by this user only (0600).

    The temporary file is created with mode 0600 (not chmod-ed afterwards), so the content is
    never readable by others, not even for an instant.
    """
    temporary = _private_temporary(path, text)
    os.replace(temporary, path)


def _private_temporary(path: Path, text: str) -> Path:
    """A new 0600 file beside `path` holding `text`; its name is unique to this call (threads of
    one process included), so concurrent writers never share one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return temporary


def _ensure_secret(data_dir: Path, name: str) -> str:
    """The secret in `<data-dir>/secrets/<name>`, generated on first use.

    Router workers start at the same moment and may all find the file missing: each writes its
    candidate to a private temporary file and hard-links it into place, which never replaces an
    existing file, so the first writer wins and every process reads that one secret.
    """
    path = secrets_dir(data_dir) / name
    if not path.exists():
        temporary = _private_temporary(path, secrets.token_urlsafe(SECRET_BYTES))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    path.chmod(0o600)  # files written by older versions were 0644
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty; delete it to generate a new secret")
    return secret


def _read_secret(data_dir: Path, name: str) -> str:
    try:
        return (data_dir / "secrets" / name).read_text().strip()
    except FileNotFoundError:
        return ""


def ensure_jwt_secret(data_dir: Path) -> str:
    """Return the deployment's HS256 secret, creating it on first use."""
    return _ensure_secret(data_dir, JWT_SECRET_FILE)


def read_jwt_secret(data_dir: Path) -> str:
    return _read_secret(data_dir, JWT_SECRET_FILE)


def ensure_queue_token_secret(data_dir: Path) -> str:
    """Return the HMAC secret of waiting-room admission tokens, creating it on first use."""
    return _ensure_secret(data_dir, QUEUE_TOKEN_SECRET_FILE)


def ensure_redis_password(data_dir: Path) -> str:
    """Return the embedded Redis's password, creating it on first use."""
    return _ensure_secret(data_dir, REDIS_PASSWORD_FILE)
