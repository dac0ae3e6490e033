"""Docs stay true: every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_configuration_doc() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"`TICKETING_{name.upper()}`" not in text]
    assert missing == []
