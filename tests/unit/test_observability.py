"""What `ticketing up` writes for Prometheus and Grafana (cluster/observability.py), what
`ticketing status` prints per shard, and the CLI's help and version — without a cluster.
tests/integration/test_prometheus.py runs a real Prometheus on the generated config."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import observability
from cluster.cli import build_parser
from cluster.observability import rule_files, scrape_address, write_observability
from cluster.status import format_status

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def generated(tmp_path: Path) -> observability.ObservabilityFiles:
    return write_observability(tmp_path / "data", router_address="127.0.0.1:8123",
                               ray_targets=["127.0.0.1:9101"], prometheus_url="http://127.0.0.1:9191",
                               scrape_interval_s=5.0)


def test_prometheus_config_scrapes_this_runs_router_actors_and_ray(tmp_path: Path) -> None:
    files = generated(tmp_path)
    config = yaml.safe_load(files.prometheus_config.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ticketing-router"]["metrics_path"] == "/metrics"
    assert jobs["ticketing-actors"]["metrics_path"] == "/metrics/actors"
    assert jobs["ticketing-router"]["static_configs"] == [{"targets": ["127.0.0.1:8123"]}]
    assert jobs["ray"]["static_configs"] == [{"targets": ["127.0.0.1:9101"]}]
    assert config["global"]["scrape_interval"] == "5s"
    assert str((ROOT / "dashboards" / "alerts.yml").resolve()) in config["rule_files"]
    assert all(Path(name).is_absolute() and Path(name).exists() for name in config["rule_files"])


def test_no_ray_job_without_ray_targets(tmp_path: Path) -> None:
    files = write_observability(tmp_path / "data", router_address="127.0.0.1:1", ray_targets=[],
                                prometheus_url="http://127.0.0.1:9090", scrape_interval_s=1)
    jobs = [job["job_name"] for job in yaml.safe_load(files.prometheus_config.read_text())["scrape_configs"]]
    assert jobs == ["ticketing-router", "ticketing-actors"]


def test_grafana_provisioning_has_absolute_paths_to_both_dashboard_folders(tmp_path: Path) -> None:
    files = generated(tmp_path)
    datasources = yaml.safe_load((files.grafana_provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"] == [{
        "name": "Prometheus", "uid": "prometheus", "type": "prometheus", "access": "proxy",
        "url": "http://127.0.0.1:9191", "isDefault": True, "editable": True}]
    providers = yaml.safe_load((files.grafana_provisioning / "dashboards" / "ticketing.yml").read_text())
    paths = {provider["folder"]: Path(provider["options"]["path"]) for provider in providers["providers"]}
    assert paths["Ticketing"] == (ROOT / "dashboards" / "grafana").resolve()
    assert paths["Ray"] == files.folder / "grafana" / "ray-dashboards"
    assert all(path.is_absolute() and list(path.glob("*.json")) for path in paths.values())


def datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield str(node["datasource"].get("uid"))
        for value in node.values():
            yield from datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from datasource_uids(value)


def test_every_dashboard_finds_the_provisioned_datasource() -> None:
    """A panel names either the provisioned uid or the dashboard's `datasource` variable, which
    picks a Prometheus datasource (the provisioned one is the default)."""
    dashboards = list((ROOT / "dashboards" / "grafana").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        uids = set(datasource_uids(dashboard.get("panels", [])))
        assert uids <= {observability.DATASOURCE_UID, "${datasource}", "$datasource"}, (path.name, uids)
        if uids - {observability.DATASOURCE_UID}:
            variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
            assert variables["datasource"]["type"] == "datasource", path.name
            assert variables["datasource"]["query"] == "prometheus", path.name


def test_rule_files_are_found_by_name_and_told_from_promtool_tests(tmp_path: Path) -> None:
    folder = tmp_path / "dashboards"
    folder.mkdir()
    (folder / "alerts.yml").write_text("groups: []\n")
    (folder / "slo_rules.yml").write_text("groups: []\n")
    (folder / "alerts_test.yml").write_text("rule_files: [alerts.yml]\ntests: []\n")
    (folder / "prometheus.yml").write_text("scrape_configs: []\n")
    assert [path.name for path in rule_files(tmp_path)] == ["alerts.yml", "slo_rules.yml"]


def test_the_checked_in_example_config_has_the_generated_jobs(tmp_path: Path) -> None:
    """dashboards/prometheus.yml documents the jobs for a hand-made setup: same names and paths."""
    example = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    config = yaml.safe_load(generated(tmp_path).prometheus_config.read_text())

    def jobs(document: dict[str, object]) -> dict[str, str]:
        return {job["job_name"]: job.get("metrics_path", "/metrics")  # type: ignore[index, attr-defined]
                for job in document["scrape_configs"]  # type: ignore[attr-defined]
                if job["job_name"] != "ray"}  # type: ignore[index]

    assert jobs(example) == jobs(config)


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", "127.0.0.1:8000"), ("0.0.0.0", "127.0.0.1:8000"),
                                                ("::", "127.0.0.1:8000"), ("::1", "[::1]:8000")])
def test_a_wildcard_listen_address_is_scraped_on_loopback(host: str, expected: str) -> None:
    assert scrape_address(host, 8000) == expected


def test_status_shows_each_shards_events_epoch_last_commit_and_queue() -> None:
    actor = {"up": True, "pid": 42, "core": "compiled", "events": 3, "epoch": 7, "last_commit_at": 1000.0,
             "commit_queue_depth": 2, "quarantined_events": []}
    database = {"up": True, "schema_version": 3, "lease_epoch": 7}
    status: dict[str, Any] = {"healthy": False, "base_url": "http://127.0.0.1:8000", "ray_address": "127.0.0.1:1",
              "prometheus_url": None, "redis": {"up": True},
              "shards": [{"shard_id": 0, "slots": "0-127", "actor": actor, "database": database},
                         {"shard_id": 1, "slots": "128-255", "actor": {"up": False}, "database": database}]}
    lines = format_status(status, now=1012.0).splitlines()
    header = next(line for line in lines if line.startswith("shard"))
    assert header.split()[:8] == ["shard", "slots", "events", "epoch", "last", "commit", "queue", "actor"]
    assert lines[lines.index(header) + 1].split()[:8] == ["0", "0-127", "3", "7", "12", "s", "ago", "2"]
    assert lines[lines.index(header) + 2].split()[:3] == ["1", "128-255", "-"] and "DOWN" in lines[-2]
    never = format_status({**status, "shards": [{**status["shards"][0], "actor": {**actor, "last_commit_at": None}}]})
    assert "never" in never


def test_every_cli_option_has_help() -> None:
    parser = build_parser()
    missing = []
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, sub in [("ticketing", parser), *subparsers.choices.items()]:
        missing += [f"{name} {action.option_strings or action.dest}" for action in sub._actions
                    if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert missing == []


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"ticketing {version('ticketing')}"
