"""The pure parts of search and reports, in process: the tsquery built from `q` can carry nothing but
quoted words, CSV cells defuse formulas and round-trip through `csv`, seat labels follow the rows,
the export slots bound, the cache key normalises, and the settings refuse exports that would take
every pooled connection. tests/e2e/test_search.py and test_reports.py test them over HTTP."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.settings import Settings
from router.browse import text_query
from router.events_cache import query_field
from router.problems import ApiError
from router.reports_api import ExportSlots, csv_cell
from shards.queries import EventListQuery
from shards.reports import SeatLabels

pytestmark = pytest.mark.unit

# What text_query may produce: quoted lexemes of letters and digits joined by `&`, the last a prefix.
LEXEME = r"'[^\W_]+'"
TSQUERY = re.compile(rf"^{LEXEME}( & {LEXEME})*:\*$")


def test_words_must_all_match_and_the_last_is_a_prefix() -> None:
    assert text_query("Rock Lisb") == "'Rock' & 'Lisb':*"
    assert text_query("  rock,   lisboa! ") == "'rock' & 'lisboa':*"
    assert text_query("café Zürich 東京") == "'café' & 'Zürich' & '東京':*"
    assert text_query("cafe\u0301") == "'café':*"  # composed first, as stored text usually is


@pytest.mark.parametrize("text", ["'", "\\", "&|!:*()", "<->", "!", "%_", "🎸", "''''", " "])
def test_text_without_words_is_no_query(text: str) -> None:
    assert text_query(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("a & b | !c", "'a' & 'b' & 'c':*"),
    ("x:A", "'x' & 'A':*"),
    ("foo:*", "'foo':*"),
    ("'; DROP TABLE events; --", "'DROP' & 'TABLE' & 'events':*"),
    ("o'brien", "'o' & 'brien':*"),
    ("a\\'b", "'a' & 'b':*"),
    ("snake_case", "'snake' & 'case':*"),
])
def test_operators_quotes_and_backslashes_only_separate_words(text: str, expected: str) -> None:
    assert text_query(text) == expected


@given(st.text(max_size=100))
def test_any_text_gives_only_quoted_words(text: str) -> None:
    """Whatever the client sends, the tsquery holds no operator, quote or backslash of its own."""
    built = text_query(text)
    assert built is None or TSQUERY.match(built), built


def test_negative_control_the_pattern_catches_an_operator() -> None:
    """The property above would see a query that let an operator or a quote through."""
    for leaked in ("'a' | 'b':*", "'a' & !'b':*", "'a''b':*", "'a\\'b':*", "'a' <-> 'b':*"):
        assert not TSQUERY.match(leaked), leaked


@pytest.mark.parametrize("text", ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_defused(text: str) -> None:
    assert csv_cell(text) == "'" + text


def test_other_cells_are_written_as_they_are() -> None:
    moment = datetime(2027, 5, 1, 20, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    ticket_id = uuid.uuid4()
    assert csv_cell(None) == "" and csv_cell(-5) == -5 and csv_cell(42) == 42
    assert csv_cell("Ana = Bea") == "Ana = Bea" and csv_cell("'quoted") == "'quoted"
    assert csv_cell(moment) == "2027-05-01T19:00:00.123456Z" and csv_cell(ticket_id) == str(ticket_id)


def test_a_hostile_name_round_trips_through_csv() -> None:
    name = 'Doe, "Jay"\r\nJr. — Ærøskøbing 東京'
    buffer = io.StringIO()
    csv.writer(buffer).writerow([csv_cell(name), csv_cell("=cmd")])
    assert next(csv.reader(io.StringIO(buffer.getvalue(), newline=""))) == [name, "'=cmd"]


def test_seat_labels_follow_the_rows() -> None:
    sections = [{"section_id": "floor", "kind": "ga", "first_seat_no": None, "rows": "[]"},
                {"section_id": "A", "kind": "seated", "first_seat_no": 0,
                 "rows": '[{"label": "1", "seats": 3}, {"label": "2", "seats": 2}]'},
                {"section_id": "B", "kind": "seated", "first_seat_no": 5, "rows": [{"label": "AA", "seats": 4}]}]
    labels = SeatLabels(sections)
    assert [labels.label(seat_no) for seat_no in range(9)] == [
        "A-1-1", "A-1-2", "A-1-3", "A-2-1", "A-2-2", "B-AA-1", "B-AA-2", "B-AA-3", "B-AA-4"]
    assert labels.label(None) == "" and SeatLabels(sections[:1]).label(3) == ""


def test_export_slots_refuse_beyond_their_number() -> None:
    slots = ExportSlots(2)
    slots.take("orders", 1)
    slots.take("attendees", 1)
    with pytest.raises(ApiError) as refused:
        slots.take("orders", 1)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    slots.give_back()
    slots.take("orders", 1)


def test_cache_keys_normalise_times_and_tell_queries_apart() -> None:
    event_id = uuid.uuid4()
    utc = datetime(2031, 1, 1, 12, tzinfo=UTC)
    lisbon = utc.astimezone(timezone(timedelta(hours=1)))

    def query(after: datetime, words: str | None = "'rock':*", organizer: str | None = None) -> EventListQuery:
        return EventListQuery((after, event_id), None, None, None, words, None, organizer, 20)

    assert query_field(query(utc)) == query_field(query(lisbon))
    fields = {query_field(query(utc)), query_field(query(utc, "'roc':*")), query_field(query(utc, None)),
              query_field(query(utc, organizer="org-a")), query_field(query(utc, organizer="org-b"))}
    assert len(fields) == 5


def test_exports_must_leave_pooled_connections() -> None:
    with pytest.raises(ValueError, match="exports_per_worker_max must leave"):
        Settings(exports_per_worker_max=8, db_pool_size_max=8)
    assert Settings(exports_per_worker_max=7, db_pool_size_max=8).exports_per_worker_max == 7
