"""System idempotency keys live where no client can reach (issue 10, defect 4).

The checkout's confirm and fail steps run under the hold owner's user id; if the owner could send
their keys first (as `resolver:<hold>:fail` could be), the step would replay the owner's command
for ever and the hold would stay pinned. These tests tie the namespace to the edge's validation.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from router.checkout import keys
from router.deps import idempotency_key
from router.problems import ApiError

pytestmark = pytest.mark.unit

HOLD = uuid.UUID("018f0000-0000-8000-8000-000000000001")


def sent(key: str) -> SimpleNamespace:
    return SimpleNamespace(headers={"idempotency-key": key})


@pytest.mark.parametrize("key", [keys.confirm_key(HOLD), keys.fail_key(HOLD), keys.pin_key(None, HOLD),
                                 keys.order_refund_request_key(None, HOLD), keys.system_key("confirm", "x" * 400)])
def test_no_client_can_send_a_system_key(key: str) -> None:
    with pytest.raises(ApiError) as refused:
        idempotency_key(sent(key))  # type: ignore[arg-type]
    assert refused.value.status == 422


def test_the_old_resolver_keys_were_sendable_by_the_owner() -> None:
    """Negative control: the keys the resolver used before pass the edge, so an owner could send them."""
    assert idempotency_key(sent(f"resolver:{HOLD}:fail")) == f"resolver:{HOLD}:fail"  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [1, 200, 250, 251, 252, 253, 254, 255, 1000])
def test_system_keys_fit_the_column_and_never_collide(length: int) -> None:
    subject = "k" * length
    key = keys.system_key("pin", subject)
    assert 1 <= len(key) <= keys.KEY_CHARS_MAX
    assert key != keys.system_key("pin", subject + "k") and key != keys.system_key("fail", subject)


def test_a_hashed_key_cannot_equal_a_plain_one() -> None:
    long_key = keys.system_key("pin", "z" * 300)
    plain = keys.system_key("pin", long_key.split("#", 1)[1])
    assert long_key != plain and "#" in long_key and ":" not in long_key


def test_client_keys_are_their_own_requests() -> None:
    """The pin and the refund are the client's requests: their keys are the client's, as sent."""
    assert keys.pin_key("abc", HOLD) == "abc" and keys.order_refund_request_key("abc", HOLD) == "abc"
