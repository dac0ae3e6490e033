"""The shard actor's stock metrics (actors/shard_metrics.py StockCollector), without an actor."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from actors.inventory.results import SectionAvailability
from actors.shard_metrics import ShardMetrics


def samples(metrics: ShardMetrics) -> dict[tuple[str, ...], float]:
    """(metric, event, section, state) → value for the stock families."""
    found = {}
    for family in text_string_to_metric_families(metrics.text().decode()):
        for sample in family.samples:
            if sample.name.startswith("ticketing_section_"):
                labels = sample.labels
                found[(sample.name, labels.get("event", ""), labels.get("section", ""), labels.get("state", ""))] = (
                    sample.value)
    return found


def test_each_section_is_exported_by_state_up_to_the_bound() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    sections = [(first, (SectionAvailability("floor", "ga", 10, 6, 3, 1, 0, 100),
                         SectionAvailability("A", "seated", 8, 5, 0, 2, 1, 200))),
                (second, (SectionAvailability("floor", "ga", 5, 5, 0, 0, 0, 100),))]
    metrics = ShardMetrics(3)
    metrics.watch_stock(lambda: sections, sections_max=2)
    found = samples(metrics)
    tickets = "ticketing_section_tickets"
    assert [found[tickets, str(first), "floor", state] for state in ("available", "held", "sold")] == [6, 3, 1]
    assert found[tickets, str(first), "A", "blocked"] == 1
    assert not [key for key in found if key[1] == str(second)]  # beyond the bound
    assert found["ticketing_section_metrics_omitted", "", "", ""] == 1


def test_nothing_is_exported_before_the_actor_feeds_it() -> None:
    assert samples(ShardMetrics(0)) == {("ticketing_section_metrics_omitted", "", "", ""): 0.0}
