"""Per-deployment secrets generated under ``<data-dir>/secrets`` (0600), unless configured.

A deployment that sets ``TICKETING_JWT_SECRET`` (or a public key) never touches these files.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

JWT_SECRET_BYTES = 32


def secrets_dir(data_dir: Path) -> Path:
    path = data_dir / "secrets"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def ensure_jwt_secret(data_dir: Path) -> str:
    """Return the deployment's HS256 secret, creating it on first use."""
    path = secrets_dir(data_dir) / "jwt_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(JWT_SECRET_BYTES))
    return path.read_text().strip()


def read_jwt_secret(data_dir: Path) -> str:
    path = data_dir / "secrets" / "jwt_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
