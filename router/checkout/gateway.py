"""The payment gateway port, the built-in simulated gateway, and a fault-injecting wrapper.

Outcomes of a call, and what the checkout service (router/checkout/service.py) does with each:

- a `Charge` with ``status="succeeded"`` — money taken; confirm the order.
- a `Charge` with ``status="declined"`` (``decline_code`` says why) — an expected outcome, so a
  result, not an exception (API 402 PAYMENT_DECLINED); nothing was taken.
- `GatewayError` — the gateway failed *before* charging; retrying with the same idempotency key
  is safe (API 502 PAYMENT_GATEWAY_ERROR, hold kept pinned).
- `GatewayOutcomeUnknown` — the call timed out or its answer was lost: the charge may or may not
  exist. Resolve it with `lookup(idempotency_key)` (or a retry with the same key), never with a
  new key.
- `RefundRejected` — the refund cannot happen (unknown or declined charge, or more than is left
  to refund). `IdempotencyKeyReused` — a key came back with a different amount, currency, token
  or charge; a provider refuses that rather than guess, and so do we.
- `ValueError` for arguments no caller should send (non-positive amounts, empty keys): a bug.

Idempotency is the provider's: the same key always returns the first charge (same id) and never
charges twice, even when processes race; a refund is idempotent per its own key, and the refunded
total never exceeds the charged amount. A real provider's adapter implements `PaymentGateway`
with the same semantics (wrapping its SDK calls in `bounded_call`) and is added as a new ``kind``
in `build_gateway`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

GATEWAY_CALL_TIMEOUT_S_DEFAULT = 10.0
SIMULATED_SLOW_DELAY_S_DEFAULT = 3.0
SIMULATED_ERROR_ATTEMPTS_DEFAULT = 1
# SQLite waits this long for another process's write transaction before giving up (GatewayError).
# Transactions here are a few statements, so waiting long means something is stuck.
SQLITE_BUSY_TIMEOUT_S_DEFAULT = 5.0
IDEMPOTENCY_KEY_CHARS_MAX = 255
DESCRIPTION_CHARS_MAX = 1000
# One charge above this is a bug in the caller (API money is integer cents).
CHARGE_AMOUNT_CENTS_MAX = 100_000_000
_CURRENCY = re.compile(r"[A-Z]{3}")

ChargeStatus = Literal["succeeded", "declined"]
OnCall = Callable[[str, str, float], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Charge:
    id: str
    status: ChargeStatus
    amount_cents: int
    currency: str
    idempotency_key: str
    created_at_s: float
    refunded_cents: int
    decline_code: str = ""  # "card_declined", "invalid_token"; empty when succeeded


@dataclass(frozen=True)
class RefundResult:
    id: str
    charge_id: str
    amount_cents: int
    idempotency_key: str
    created_at_s: float
    charge_refunded_cents: int  # the charge's refunded total right after this refund


class GatewayError(Exception):
    """The gateway failed before charging; safe to retry with the same idempotency key."""


class GatewayOutcomeUnknown(Exception):
    """Timed out or the answer was lost; the operation may have happened. Resolve with `lookup`."""


class RefundRejected(Exception):
    """The refund cannot happen: unknown or declined charge, or more than is left to refund."""


class IdempotencyKeyReused(Exception):
    """The key was first used with different parameters."""


class PaymentGateway(Protocol):
    async def charge(self, *, amount_cents: int, currency: str, token: str, idempotency_key: str,
                     description: str) -> Charge: ...

    async def refund(self, *, charge_id: str, amount_cents: int, idempotency_key: str) -> RefundResult: ...

    async def lookup(self, idempotency_key: str) -> Charge | None: ...


class CallStats:
    """Counts calls by (operation, outcome) and forwards each to an optional hook (for metrics)."""

    def __init__(self, on_call: OnCall | None = None) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._on_call = on_call

    def record(self, operation: str, outcome: str, duration_s: float) -> None:
        self.counts[(operation, outcome)] += 1
        if self._on_call is not None:
            self._on_call(operation, outcome, duration_s)


def _outcome_of(result: object) -> str:
    if isinstance(result, Charge):
        return result.status
    return "missing" if result is None else "succeeded"


async def bounded_call(operation: str, call: Awaitable[T], *, timeout_s: float, stats: CallStats) -> T:
    """Run one gateway call under its timeout, map store failures to the port's errors, count it.

    A timed-out charge or refund may have happened (GatewayOutcomeUnknown); a timed-out lookup
    changed nothing, so it is an ordinary GatewayError.
    """
    started_s = time.monotonic()
    outcome = "error"
    try:
        result = await asyncio.wait_for(call, timeout_s)
        outcome = "found" if operation == "lookup" and result is not None else _outcome_of(result)
        return result
    except TimeoutError as error:
        outcome = "timeout"
        if operation == "lookup":
            raise GatewayError(f"{operation} timed out after {timeout_s} s") from error
        raise GatewayOutcomeUnknown(f"{operation} timed out after {timeout_s} s") from error
    except sqlite3.Error as error:
        raise GatewayError(f"{operation}: gateway store failed: {error}") from error
    except GatewayOutcomeUnknown:
        outcome = "unknown"
        raise
    except (RefundRejected, IdempotencyKeyReused):
        outcome = "rejected"
        raise
    finally:
        stats.record(operation, outcome, time.monotonic() - started_s)


def _check_key(idempotency_key: str) -> None:
    if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_CHARS_MAX:
        raise ValueError(f"idempotency_key must have 1..{IDEMPOTENCY_KEY_CHARS_MAX} characters")


def _check_charge(amount_cents: int, currency: str, idempotency_key: str, description: str) -> None:
    if not 1 <= amount_cents <= CHARGE_AMOUNT_CENTS_MAX:
        raise ValueError(f"amount_cents must be in 1..{CHARGE_AMOUNT_CENTS_MAX}")
    if not _CURRENCY.fullmatch(currency):
        raise ValueError("currency must be an ISO 4217 code such as EUR")
    if len(description) > DESCRIPTION_CHARS_MAX:
        raise ValueError(f"description must have at most {DESCRIPTION_CHARS_MAX} characters")
    _check_key(idempotency_key)


# Constraints repeat the code's checks (STYLE §4): one charge per key, refunds within the charge.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'declined')),
    decline_code TEXT NOT NULL,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    currency TEXT NOT NULL,
    token TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at_s REAL NOT NULL,
    refunded_cents INTEGER NOT NULL CHECK (refunded_cents BETWEEN 0 AND amount_cents),
    CHECK (status = 'succeeded' OR refunded_cents = 0)
);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    charge_id TEXT NOT NULL REFERENCES charges (id),
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    created_at_s REAL NOT NULL,
    charge_refunded_cents INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_attempts (
    idempotency_key TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""
_CHARGE_COLUMNS = "id, status, amount_cents, currency, idempotency_key, created_at_s, refunded_cents, decline_code"
_REFUND_COLUMNS = "id, charge_id, amount_cents, idempotency_key, created_at_s, charge_refunded_cents"
_DECLINE_CODES = {"tok_visa": "", "tok_slow": "", "tok_error": "", "tok_lost": "", "tok_declined": "card_declined"}


class SimulatedGateway:
    """A provider's test mode, durable in SQLite and shared by every process on the data folder.

    Router workers, restarts and the recovery pass all see the same charges. Test tokens:
    ``tok_visa`` succeeds; ``tok_declined`` declines (``card_declined``); ``tok_slow`` succeeds
    after ``slow_delay_s`` — if the caller's timeout fires first nothing is charged, the "unknown,
    in fact nothing happened" case; ``tok_error`` raises GatewayError for the first
    ``error_attempts`` attempts per idempotency key, then succeeds; ``tok_lost`` charges and then
    raises GatewayOutcomeUnknown, the "unknown, in fact charged" case. Any other token declines
    with ``invalid_token``, as a provider's test mode does for a card it does not know.
    """

    def __init__(self, data_dir: Path, *, call_timeout_s: float = GATEWAY_CALL_TIMEOUT_S_DEFAULT,
                 slow_delay_s: float = SIMULATED_SLOW_DELAY_S_DEFAULT,
                 error_attempts: int = SIMULATED_ERROR_ATTEMPTS_DEFAULT,
                 busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S_DEFAULT,
                 on_call: OnCall | None = None, clock: Callable[[], float] = time.time) -> None:
        if call_timeout_s <= 0 or slow_delay_s < 0 or error_attempts < 0 or busy_timeout_s <= 0:
            raise ValueError("timeouts must be positive, delays and attempts not negative")
        self.path = data_dir / "gateway" / "gateway.sqlite3"
        self.call_timeout_s = call_timeout_s
        self.slow_delay_s = slow_delay_s
        self.error_attempts = error_attempts
        self.busy_timeout_s = busy_timeout_s
        self.stats = CallStats(on_call)
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            # WAL lets lookups read while another process writes; it persists in the file.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)

    async def charge(self, *, amount_cents: int, currency: str, token: str, idempotency_key: str,
                     description: str) -> Charge:
        _check_charge(amount_cents, currency, idempotency_key, description)
        arguments = (amount_cents, currency, token, idempotency_key, description)
        return await bounded_call("charge", self._charge(*arguments), timeout_s=self.call_timeout_s,
                                  stats=self.stats)

    async def refund(self, *, charge_id: str, amount_cents: int, idempotency_key: str) -> RefundResult:
        if amount_cents < 1:
            raise ValueError("amount_cents must be positive")
        _check_key(idempotency_key)
        call = asyncio.to_thread(self._refund_sync, charge_id, amount_cents, idempotency_key)
        return await bounded_call("refund", call, timeout_s=self.call_timeout_s, stats=self.stats)

    async def lookup(self, idempotency_key: str) -> Charge | None:
        _check_key(idempotency_key)
        call = asyncio.to_thread(self._lookup_sync, idempotency_key)
        return await bounded_call("lookup", call, timeout_s=self.call_timeout_s, stats=self.stats)

    async def _charge(self, amount_cents: int, currency: str, token: str, idempotency_key: str,
                      description: str) -> Charge:
        if token == "tok_slow":
            await asyncio.sleep(self.slow_delay_s)
        # The SQLite work runs in a thread; if the timeout fires meanwhile it still finishes, which
        # is exactly a provider's "outcome unknown" and what `lookup` resolves.
        return await asyncio.to_thread(self._charge_sync, amount_cents, currency, token, idempotency_key,
                                       description)

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE below.
        return sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock before the first read, so a check-then-insert in
        one process cannot interleave with another's: the second waits, then sees the first row."""
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                with suppress(sqlite3.Error):  # keep the original error, not a failed rollback's
                    connection.execute("ROLLBACK")
                raise
            try:
                connection.execute("COMMIT")
            except sqlite3.Error as error:
                raise GatewayOutcomeUnknown(f"commit failed: {error}") from error

    def _charge_sync(self, amount_cents: int, currency: str, token: str, idempotency_key: str,
                     description: str) -> Charge:
        fault: Exception | None = None
        with self._write_transaction() as connection:
            existing = connection.execute(
                f"SELECT {_CHARGE_COLUMNS}, token FROM charges WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if existing is not None:
                if tuple(existing[2:4]) != (amount_cents, currency) or existing[8] != token:
                    raise IdempotencyKeyReused(f"charge key {idempotency_key!r} was used with other parameters")
                return _charge_from_row(existing[:8])
            if token == "tok_error" and self._failed_attempt(connection, idempotency_key):
                fault = GatewayError("simulated gateway failure (tok_error)")
            else:
                charge = Charge(f"ch_{secrets.token_hex(12)}", "declined" if _declines(token) else "succeeded",
                                amount_cents, currency, idempotency_key, self._clock(), 0,
                                _DECLINE_CODES.get(token, "invalid_token"))
                connection.execute(
                    f"INSERT INTO charges ({_CHARGE_COLUMNS}, token, description) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (*_charge_row(charge), token, description))
                if token == "tok_lost":
                    fault = GatewayOutcomeUnknown("simulated lost response (tok_lost): the charge happened")
        if fault is not None:
            raise fault  # after COMMIT: the failed attempt, or the lost charge, is on disk
        return charge

    def _failed_attempt(self, connection: sqlite3.Connection, idempotency_key: str) -> bool:
        """Count a tok_error attempt; True while the key is still within its failing attempts."""
        connection.execute(
            "INSERT INTO failed_attempts (idempotency_key, count) VALUES (?, 1) "
            "ON CONFLICT (idempotency_key) DO UPDATE SET count = count + 1", (idempotency_key,))
        (count,) = connection.execute("SELECT count FROM failed_attempts WHERE idempotency_key = ?",
                                      (idempotency_key,)).fetchone()
        return int(count) <= self.error_attempts

    def _refund_sync(self, charge_id: str, amount_cents: int, idempotency_key: str) -> RefundResult:
        with self._write_transaction() as connection:
            existing = connection.execute(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE idempotency_key = ?",
                                          (idempotency_key,)).fetchone()
            if existing is not None:
                if (existing[1], existing[2]) != (charge_id, amount_cents):
                    raise IdempotencyKeyReused(f"refund key {idempotency_key!r} was used with other parameters")
                return RefundResult(*existing)
            row = connection.execute("SELECT status, amount_cents, refunded_cents FROM charges WHERE id = ?",
                                     (charge_id,)).fetchone()
            if row is None:
                raise RefundRejected(f"no charge {charge_id!r}")
            status, charged_cents, refunded_cents = row
            if status != "succeeded":
                raise RefundRejected(f"charge {charge_id!r} was declined")
            if refunded_cents + amount_cents > charged_cents:
                raise RefundRejected(f"refund of {amount_cents} exceeds the {charged_cents - refunded_cents} left")
            refund = RefundResult(f"re_{secrets.token_hex(12)}", charge_id, amount_cents, idempotency_key,
                                  self._clock(), refunded_cents + amount_cents)
            connection.execute(f"INSERT INTO refunds ({_REFUND_COLUMNS}) VALUES (?,?,?,?,?,?)",
                               (refund.id, refund.charge_id, refund.amount_cents, refund.idempotency_key,
                                refund.created_at_s, refund.charge_refunded_cents))
            connection.execute("UPDATE charges SET refunded_cents = ? WHERE id = ?",
                               (refund.charge_refunded_cents, charge_id))
        return refund

    def _lookup_sync(self, idempotency_key: str) -> Charge | None:
        with closing(self._connect()) as connection:
            row = connection.execute(f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE idempotency_key = ?",
                                     (idempotency_key,)).fetchone()
        return None if row is None else _charge_from_row(row)


def _declines(token: str) -> bool:
    return _DECLINE_CODES.get(token, "invalid_token") != ""


def _charge_row(charge: Charge) -> tuple[Any, ...]:
    return (charge.id, charge.status, charge.amount_cents, charge.currency, charge.idempotency_key,
            charge.created_at_s, charge.refunded_cents, charge.decline_code)


def _charge_from_row(row: tuple[Any, ...]) -> Charge:
    return Charge(*row)


Fault = type[GatewayError] | type[GatewayOutcomeUnknown]
OPERATIONS = ("charge", "refund", "lookup")


class FaultyGateway:
    """Delegates to another gateway, failing the next N calls on demand (chaos tests, STYLE §2).

    With ``executed=True`` the inner call runs first and only its answer is lost, which is only
    meaningful for GatewayOutcomeUnknown: a GatewayError promises that nothing happened.
    """

    def __init__(self, inner: PaymentGateway) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._faults_left = 0
        self._fault: Fault = GatewayError
        self._operations: frozenset[str] = frozenset(OPERATIONS)
        self._executed = False

    def fail_next(self, calls: int, fault: Fault = GatewayError, *, operations: Iterable[str] = OPERATIONS,
                  executed: bool = False) -> None:
        if executed and fault is GatewayError:
            raise ValueError("a GatewayError means the call did not execute")
        if calls < 0 or not set(operations) <= set(OPERATIONS):
            raise ValueError(f"calls must be >= 0 and operations among {OPERATIONS}")
        self._faults_left, self._fault = calls, fault
        self._operations, self._executed = frozenset(operations), executed

    async def charge(self, *, amount_cents: int, currency: str, token: str, idempotency_key: str,
                     description: str) -> Charge:
        return await self._call("charge", lambda: self.inner.charge(
            amount_cents=amount_cents, currency=currency, token=token, idempotency_key=idempotency_key,
            description=description))

    async def refund(self, *, charge_id: str, amount_cents: int, idempotency_key: str) -> RefundResult:
        return await self._call("refund", lambda: self.inner.refund(
            charge_id=charge_id, amount_cents=amount_cents, idempotency_key=idempotency_key))

    async def lookup(self, idempotency_key: str) -> Charge | None:
        return await self._call("lookup", lambda: self.inner.lookup(idempotency_key))

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        self.calls[operation] += 1
        if self._faults_left == 0 or operation not in self._operations:
            return await call()
        self._faults_left -= 1
        if self._executed:
            await call()
        raise self._fault(f"injected fault on {operation}")


def build_gateway(kind: str, data_dir: Path, **options: Any) -> PaymentGateway:
    """The configured gateway. ``"simulated"`` is built in; a real provider's adapter (a class with
    the three methods, its own credentials from settings, each SDK call run through `bounded_call`)
    is added here as another kind, and nothing else in the router changes."""
    if kind == "simulated":
        return SimulatedGateway(data_dir, **options)
    raise ValueError(f"unknown payment gateway kind {kind!r} (built in: 'simulated')")
