"""Payments: every test token, the provider's idempotency (also across processes), refunds within
the charge, durability across restarts, timeouts, and the fault-injecting wrapper."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Coroutine
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from router.checkout.gateway import (
    CallStats,
    Charge,
    FaultyGateway,
    GatewayError,
    GatewayOutcomeUnknown,
    IdempotencyKeyReused,
    RefundRejected,
    SimulatedGateway,
    bounded_call,
    build_gateway,
)

pytestmark = pytest.mark.unit

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def charge(gateway: Any, key: str, token: str = "tok_visa", amount_cents: int = 2500) -> Charge:
    result: Charge = run(gateway.charge(amount_cents=amount_cents, currency="EUR", token=token,
                                        idempotency_key=key, description="2 tickets"))
    return result


def rows(data_dir: Path, table: str = "charges") -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(data_dir / "gateway" / "gateway.sqlite3")) as connection:
        return connection.execute(f"SELECT * FROM {table}").fetchall()


@pytest.fixture
def gateway(tmp_path: Path) -> SimulatedGateway:
    return SimulatedGateway(tmp_path, call_timeout_s=5.0, slow_delay_s=0.2)


def test_tok_visa_succeeds(gateway: SimulatedGateway) -> None:
    result = charge(gateway, "k1")
    assert result.status == "succeeded" and result.decline_code == ""
    assert (result.amount_cents, result.currency, result.idempotency_key) == (2500, "EUR", "k1")
    assert result.refunded_cents == 0
    assert result.id.startswith("ch_") and result.created_at_s > 0


@pytest.mark.parametrize(("token", "decline_code"), [("tok_declined", "card_declined"), ("tok_bogus", "invalid_token")])
def test_declines_are_results_not_exceptions(gateway: SimulatedGateway, token: str, decline_code: str) -> None:
    result = charge(gateway, "k1", token)
    assert (result.status, result.decline_code) == ("declined", decline_code)
    assert charge(gateway, "k1", token).id == result.id  # a decline is also remembered by key


def test_tok_slow_answers_after_the_delay(gateway: SimulatedGateway) -> None:
    started_s = time.monotonic()
    assert charge(gateway, "k1", "tok_slow").status == "succeeded"
    assert time.monotonic() - started_s >= 0.2


def test_a_call_slower_than_its_timeout_has_an_unknown_outcome(tmp_path: Path) -> None:
    gateway = SimulatedGateway(tmp_path, call_timeout_s=0.05, slow_delay_s=1.0)
    started_s = time.monotonic()
    with pytest.raises(GatewayOutcomeUnknown):
        charge(gateway, "k1", "tok_slow")
    assert time.monotonic() - started_s < 0.5
    assert run(gateway.lookup("k1")) is None  # the timeout fired before anything was charged
    assert gateway.stats.counts[("charge", "timeout")] == 1


def test_tok_error_fails_the_first_attempts_per_key_then_succeeds(tmp_path: Path) -> None:
    gateway = SimulatedGateway(tmp_path, error_attempts=2)
    for _ in range(2):
        with pytest.raises(GatewayError):
            charge(gateway, "k1", "tok_error")
        assert run(gateway.lookup("k1")) is None  # a GatewayError charged nothing
    with pytest.raises(GatewayError):
        charge(gateway, "k2", "tok_error")  # every key has its own count
    # The count is on disk: a retry landing on another worker process still succeeds.
    retried = charge(SimulatedGateway(tmp_path, error_attempts=2), "k1", "tok_error")
    assert retried.status == "succeeded"
    assert charge(gateway, "k1", "tok_error").id == retried.id


def test_tok_lost_charges_then_loses_the_answer_and_lookup_finds_it(gateway: SimulatedGateway) -> None:
    with pytest.raises(GatewayOutcomeUnknown):
        charge(gateway, "k1", "tok_lost")
    found = run(gateway.lookup("k1"))
    assert found is not None and found.status == "succeeded"
    assert charge(gateway, "k1", "tok_lost").id == found.id  # a retry returns it, no second charge
    assert len(rows(gateway.path.parent.parent)) == 1


def test_same_key_returns_the_first_charge_and_stores_one_row(gateway: SimulatedGateway, tmp_path: Path) -> None:
    first = charge(gateway, "k1")
    assert charge(gateway, "k1") == first
    assert len(rows(tmp_path)) == 1


def test_same_key_with_other_parameters_is_refused(gateway: SimulatedGateway) -> None:
    charge(gateway, "k1")
    with pytest.raises(IdempotencyKeyReused):
        charge(gateway, "k1", amount_cents=9900)
    with pytest.raises(IdempotencyKeyReused):
        charge(gateway, "k1", token="tok_declined")


def test_the_database_refuses_a_second_charge_for_a_key(gateway: SimulatedGateway, tmp_path: Path) -> None:
    """Negative control for the code's check: without it, the UNIQUE constraint still holds."""
    charge(gateway, "k1")
    with closing(sqlite3.connect(tmp_path / "gateway" / "gateway.sqlite3")) as connection, \
            pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        connection.execute("INSERT INTO charges SELECT 'ch_other', idempotency_key, status, decline_code, "
                           "amount_cents, currency, token, description, created_at_s, refunded_cents FROM charges")


def test_concurrent_charges_with_one_key_in_threads_charge_once(tmp_path: Path) -> None:
    racers = 8
    barrier = threading.Barrier(racers)
    ids: list[str] = []

    def racer() -> None:
        gateway = SimulatedGateway(tmp_path)  # its own instance, as another worker would have
        barrier.wait(timeout=10)
        ids.append(charge(gateway, "shared").id)

    threads = [threading.Thread(target=racer) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(ids) == racers and len(set(ids)) == 1
    assert len(rows(tmp_path)) == 1


KEYS_PER_PROCESS = 20


def _charge_keys_in_process(data_dir: Path, barrier: Any, results: Any) -> None:
    gateway = SimulatedGateway(data_dir)
    barrier.wait(timeout=30)
    results.put([charge(gateway, f"key-{index}").id for index in range(KEYS_PER_PROCESS)])


def test_processes_racing_on_the_same_keys_charge_each_key_once(tmp_path: Path) -> None:
    """Router worker processes share the SQLite file; BEGIN IMMEDIATE serialises check-then-insert."""
    SimulatedGateway(tmp_path)  # create the schema once, so the race is on charges only
    context = multiprocessing.get_context("spawn")
    racers = 4
    barrier, results = context.Barrier(racers), context.Queue()
    processes = [context.Process(target=_charge_keys_in_process, args=(tmp_path, barrier, results))
                 for _ in range(racers)]
    for process in processes:
        process.start()
    answers = [results.get(timeout=60) for _ in range(racers)]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert all(answer == answers[0] for answer in answers)
    assert len(rows(tmp_path)) == KEYS_PER_PROCESS


def test_lookup_after_a_restart_finds_the_charge(gateway: SimulatedGateway, tmp_path: Path) -> None:
    first = charge(gateway, "k1")
    restarted = SimulatedGateway(tmp_path)
    assert run(restarted.lookup("k1")) == first
    assert run(restarted.lookup("never-used")) is None


def refund(gateway: Any, charge_id: str, amount_cents: int, key: str) -> Any:
    return run(gateway.refund(charge_id=charge_id, amount_cents=amount_cents, idempotency_key=key))


def test_refunds_are_idempotent_and_never_exceed_the_charge(gateway: SimulatedGateway, tmp_path: Path) -> None:
    charged = charge(gateway, "k1")
    partial = refund(gateway, charged.id, 1000, "r1")
    assert (partial.amount_cents, partial.charge_refunded_cents) == (1000, 1000)
    assert refund(gateway, charged.id, 1000, "r1") == partial  # replay: same refund, no new money
    with pytest.raises(RefundRejected, match="exceeds"):
        refund(gateway, charged.id, 1501, "r2")
    assert refund(gateway, charged.id, 1500, "r3").charge_refunded_cents == 2500
    assert run(gateway.lookup("k1")) == Charge(**{**charged.__dict__, "refunded_cents": 2500})
    assert len(rows(tmp_path, "refunds")) == 2
    with pytest.raises(IdempotencyKeyReused):
        refund(gateway, charged.id, 999, "r1")


def test_refunds_of_declined_or_unknown_charges_are_rejected(gateway: SimulatedGateway) -> None:
    declined = charge(gateway, "k1", "tok_declined")
    with pytest.raises(RefundRejected, match="declined"):
        refund(gateway, declined.id, 100, "r1")
    with pytest.raises(RefundRejected, match="no charge"):
        refund(gateway, "ch_missing", 100, "r2")


def test_concurrent_refunds_cannot_exceed_the_charge(gateway: SimulatedGateway, tmp_path: Path) -> None:
    charged = charge(gateway, "k1")  # 2500 cents; 8 racers each try 1000 under their own key
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def racer(index: int) -> None:
        instance = SimulatedGateway(tmp_path)
        barrier.wait(timeout=10)
        try:
            refund(instance, charged.id, 1000, f"r{index}")
            outcomes.append("refunded")
        except RefundRejected:
            outcomes.append("rejected")

    threads = [threading.Thread(target=racer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["refunded"] * 2 + ["rejected"] * 6
    found = run(gateway.lookup("k1"))
    assert found is not None and found.refunded_cents == 2000


def test_a_locked_store_is_a_gateway_error_and_charges_nothing(tmp_path: Path) -> None:
    gateway = SimulatedGateway(tmp_path, busy_timeout_s=0.1)
    blocker = sqlite3.connect(gateway.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock too long
    try:
        with pytest.raises(GatewayError):
            charge(gateway, "k1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert run(gateway.lookup("k1")) is None
    assert charge(gateway, "k1").status == "succeeded"  # the retry with the same key works


@pytest.mark.parametrize(("operation", "error"), [("charge", GatewayOutcomeUnknown), ("refund", GatewayOutcomeUnknown),
                                                  ("lookup", GatewayError)])
def test_every_call_is_bounded_by_its_timeout(operation: str, error: type[Exception]) -> None:
    stats = CallStats()
    started_s = time.monotonic()
    with pytest.raises(error):
        run(bounded_call(operation, asyncio.sleep(10), timeout_s=0.05, stats=stats))
    assert time.monotonic() - started_s < 1.0
    assert stats.counts == {(operation, "timeout"): 1}


def test_every_call_is_reported_to_the_hook(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    durations_s: list[float] = []

    def on_call(operation: str, outcome: str, duration_s: float) -> None:
        calls.append((operation, outcome))
        durations_s.append(duration_s)

    gateway = SimulatedGateway(tmp_path, on_call=on_call)
    charged = charge(gateway, "k1")
    charge(gateway, "k2", "tok_declined")
    with pytest.raises(GatewayError):
        charge(gateway, "k3", "tok_error")
    with pytest.raises(GatewayOutcomeUnknown):
        charge(gateway, "k4", "tok_lost")
    refund(gateway, charged.id, 100, "r1")
    with pytest.raises(RefundRejected):
        refund(gateway, charged.id, 10_000, "r2")
    run(gateway.lookup("k1"))
    run(gateway.lookup("k5"))
    assert calls == [("charge", "succeeded"), ("charge", "declined"), ("charge", "error"), ("charge", "unknown"),
                     ("refund", "succeeded"), ("refund", "rejected"), ("lookup", "found"), ("lookup", "missing")]
    assert sum(gateway.stats.counts.values()) == len(calls)
    assert all(0 <= duration_s < 5 for duration_s in durations_s)


@pytest.mark.parametrize("arguments", [{"amount_cents": 0}, {"currency": "eur"}, {"idempotency_key": ""},
                                       {"idempotency_key": "k" * 256}])
def test_arguments_no_caller_should_send_are_bugs(gateway: SimulatedGateway, arguments: dict[str, Any]) -> None:
    call: dict[str, Any] = {"amount_cents": 100, "currency": "EUR", "token": "tok_visa", "idempotency_key": "k1",
                            "description": ""} | arguments
    with pytest.raises(ValueError):
        run(gateway.charge(**call))


def test_faulty_gateway_fails_the_next_calls_then_delegates(gateway: SimulatedGateway) -> None:
    faulty = FaultyGateway(gateway)
    faulty.fail_next(2, GatewayError, operations=["charge"])
    for _ in range(2):
        with pytest.raises(GatewayError):
            charge(faulty, "k1")
    assert run(faulty.lookup("k1")) is None  # lookups were not faulted, and nothing was charged
    assert charge(faulty, "k1").status == "succeeded"
    assert faulty.calls == {"charge": 3, "lookup": 1}


def test_faulty_gateway_can_lose_the_answer_of_an_executed_call(gateway: SimulatedGateway) -> None:
    faulty = FaultyGateway(gateway)
    faulty.fail_next(1, GatewayOutcomeUnknown, executed=True)
    with pytest.raises(GatewayOutcomeUnknown):
        charge(faulty, "k1")
    found = run(faulty.lookup("k1"))
    assert found is not None and found.status == "succeeded"
    with pytest.raises(ValueError):
        faulty.fail_next(1, GatewayError, executed=True)  # a GatewayError promises nothing happened


def test_build_gateway(tmp_path: Path) -> None:
    gateway = build_gateway("simulated", tmp_path, call_timeout_s=1.5, slow_delay_s=0.1)
    assert isinstance(gateway, SimulatedGateway)
    assert (gateway.call_timeout_s, gateway.slow_delay_s) == (1.5, 0.1)
    assert (tmp_path / "gateway" / "gateway.sqlite3").exists()
    with pytest.raises(ValueError, match="unknown payment gateway kind"):
        build_gateway("stripe", tmp_path)
