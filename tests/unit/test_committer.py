"""The group committer's failure paths, without a database: which errors count as a refused value
(handed to poison isolation) and which fail every waiting caller (fail-stop)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from actors.committer import CommitFailed, Entry, GroupCommitter, is_data_error
from actors.isolation import refusal

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
