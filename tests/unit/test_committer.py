"""The group committer's failure paths, without a database: which errors count as a refused value
(handed to poison isolation) and which fail every waiting caller (fail-stop)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from actors.committer import CommitFailed, Entry, GroupCommitter, is_data_error
from actors.isolation import PoisonIsolation, refusal
from actors.shard_metrics import ShardMetrics
from shards.writer import OVERSELL_GUARDS, oversell_guard

pytestmark = pytest.mark.unit


def test_data_errors_are_deterministic_and_connection_losses_are_not() -> None:
    assert is_data_error(asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence 0x00"))
    assert is_data_error(asyncpg.exceptions.CheckViolationError("length(key) BETWEEN 1 AND 255"))
    assert is_data_error(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert is_data_error(asyncpg.DataError("invalid input for query argument $1"))
    assert is_data_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert is_data_error(OverflowError("date value out of range"))
    assert not is_data_error(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"))
    assert not is_data_error(asyncpg.exceptions.SerializationError("could not serialize"))
    assert not is_data_error(TimeoutError())
    assert not is_data_error(OSError("connection reset"))


def test_a_refusal_blames_the_request_only_for_values_that_cannot_be_stored() -> None:
    assert refusal(asyncpg.exceptions.CharacterNotInRepertoireError("0x00")).code == "VALIDATION_ERROR"
    assert refusal(asyncpg.DataError("invalid input")).code == "VALIDATION_ERROR"
    assert refusal(asyncpg.exceptions.UniqueViolationError("duplicate")).code == "INTERNAL_ERROR"


def _committer(commit: Any, on_poison: Any) -> tuple[GroupCommitter, list[BaseException]]:
    failures: list[BaseException] = []
    committer = GroupCommitter(commit, queue_batches_max=16, batch_commands_max=100, batch_wait_ms_max=5,
                               on_failure=failures.append, on_poison=on_poison)
    return committer, failures


def test_a_refused_value_hands_every_entry_to_isolation_instead_of_failing_them() -> None:
    handed: list[list[Entry]] = []

    async def commit(changes: list[Any]) -> None:
        raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00")

    async def on_poison(entries: list[Entry], error: BaseException) -> None:
        handed.append(entries)
        for entry in entries:
            entry.future.set_result(["re-applied"])

    async def main() -> list[Any]:
        committer, failures = _committer(commit, on_poison)
        committer.start()
        futures = [committer.submit([f"change-{n}"], 1, [f"request-{n}"], [None]) for n in range(5)]
        results = await asyncio.gather(*futures)
        await committer.stop()
        assert not failures, "isolation was bypassed: the actor was told to rebuild as for an unknown outcome"
        return results

    assert asyncio.run(main()) == [["re-applied"]] * 5
    assert sum(len(entries) for entries in handed) == 5


def test_an_unknown_outcome_still_fails_every_caller_and_rebuilds() -> None:
    async def commit(changes: list[Any]) -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    async def on_poison(entries: list[Entry], error: BaseException) -> None:
        raise AssertionError("a connection loss is not a refused value")

    async def main() -> tuple[list[Any], list[BaseException]]:
        committer, failures = _committer(commit, on_poison)
        committer.start()
        futures = [committer.submit([n], 1) for n in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await committer.stop()
        return results, failures

    results, failures = asyncio.run(main())
    assert all(isinstance(result, CommitFailed) for result in results)
    assert len(failures) == 1


def test_drain_waits_for_what_was_queued_before_it() -> None:
    committed: list[Any] = []

    async def commit(changes: list[Any]) -> None:
        await asyncio.sleep(0.01)
        committed.extend(changes)

    async def main() -> None:
        committer, _ = _committer(commit, None)
        committer.start()
        first = committer.submit(["a"], 1)
        await committer.drain()
        assert first.done() and committed == ["a"]
        await committer.stop()

    asyncio.run(main())


def _refused_by(error_class: type[asyncpg.PostgresError], sqlstate: str, constraint: str) -> asyncpg.PostgresError:
    """An error as asyncpg raises it for a refused row: the SQLSTATE and the constraint's name."""
    return error_class.new({"C": sqlstate, "M": f"violates {constraint}", "n": constraint})


def _oversell_counts(error: BaseException) -> dict[str, float | None]:
    """Run poison isolation's commit-refused path on `error` (the probe fails, so it gives up and
    rebuilds) and return the shard's oversell counter by guard (None: no such series)."""
    metrics = ShardMetrics(3)

    async def probe(groups: list[tuple[Any, ...]]) -> list[BaseException | None]:
        raise ConnectionResetError("the probe's connection was lost")

    async def nothing(*_: Any) -> Any:
        return None

    async def main() -> None:
        entry = Entry(["change"], 1, asyncio.get_running_loop().create_future())
        isolation = PoisonIsolation(3, metrics, probe=probe, rebuild=nothing, apply=nothing, commit=nothing)
        await isolation.commit_refused([entry], error)
        assert isinstance(entry.future.exception(), CommitFailed)

    asyncio.run(main())
    return {guard: metrics.registry.get_sample_value("ticketing_actor_oversell_refused_total",
                                                     {"shard": "3", "guard": guard})
            for guard in OVERSELL_GUARDS}


def test_a_commit_refused_by_an_oversell_guard_is_counted_by_guard() -> None:
    """Each database guard against selling twice, named in a refusal, counts once under its name."""
    refusals = {"seat_claims_pkey": (asyncpg.exceptions.UniqueViolationError, "23505"),
                "tickets_one_live_per_seat": (asyncpg.exceptions.UniqueViolationError, "23505"),
                "ga_pools_check": (asyncpg.exceptions.CheckViolationError, "23514")}
    assert set(refusals) == set(OVERSELL_GUARDS)
    for guard, (error_class, sqlstate) in refusals.items():
        counts = _oversell_counts(_refused_by(error_class, sqlstate, guard))
        assert counts == {name: 1.0 if name == guard else 0.0 for name in OVERSELL_GUARDS}


def test_other_refusals_are_not_counted_as_oversells() -> None:
    """Negative control: a value Postgres cannot store, another unique key or CHECK, and a lost
    connection leave the counter at 0 — its series exist (at 0) from the start."""
    others = [asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
              _refused_by(asyncpg.exceptions.UniqueViolationError, "23505", "idempotency_keys_pkey"),
              _refused_by(asyncpg.exceptions.CheckViolationError, "23514", "ga_pools_held_check"),
              asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")]
    for error in others:
        assert oversell_guard(error) is None, error
        assert _oversell_counts(error) == dict.fromkeys(OVERSELL_GUARDS, 0.0)
