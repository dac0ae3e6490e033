"""The alert rules as Prometheus's own tool sees them: `promtool check rules` accepts every rule file
in dashboards/, and `promtool test rules` passes every rules test file there — synthetic series on
which each alert fires when it should and stays quiet when it should not. Debian's `prometheus`
package brings promtool (`.ci/run` installs it); without it those tests are skipped.

The structural checks need no promtool: every alert has a firing and a quiet case (a quiet case of
a misspelt alert name would pass for nothing, so every case must name a real alert), and every
alert's `runbook` points at its own section of docs/operations.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool")
PROMTOOL_TIMEOUT_S = 300
SEVERITIES = {"page", "ticket", "warn", "info"}
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool binary: Debian's `prometheus` package provides it (.ci/run installs it)")


def yaml_files() -> dict[Path, Any]:
    return {path: yaml.safe_load(path.read_text()) for path in sorted(DASHBOARDS.glob("*.yml"))}


def rule_files() -> list[Path]:
    """Prometheus rule files: `groups` at the top (not a promtool test file, not a scrape config)."""
    return [path for path, content in yaml_files().items()
            if isinstance(content, dict) and "groups" in content and "tests" not in content]


def rules_test_files() -> list[Path]:
    return [path for path, content in yaml_files().items() if isinstance(content, dict) and "tests" in content]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def cases() -> list[tuple[str, str, bool]]:
    """(test name, alert name, whether it is expected to fire) of every alert case of every test file."""
    found = []
    for path in rules_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                found.append((f"{path.name}: {test['name']}", case["alertname"], bool(case.get("exp_alerts"))))
    return found


def promtool(*arguments: str | Path, cwd: Path = DASHBOARDS) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, arguments)], cwd=cwd, capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S, check=False)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def operations_anchors() -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in OPERATIONS.read_text().splitlines() if line.startswith("#")}


@needs_promtool
def test_promtool_checks_every_rule_file() -> None:
    files = rule_files()
    assert DASHBOARDS / "alerts.yml" in files
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


@needs_promtool
def test_promtool_runs_every_rules_test_file() -> None:
    files = rules_test_files()
    assert len(files) >= 1
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


@needs_promtool
def test_promtool_test_rules_fails_on_an_alert_that_does_not_fire(tmp_path: Path) -> None:
    """Negative control: a case expecting an alert on series that cannot trigger it fails, so a
    passing run above means the alerts behaved as the cases say."""
    shutil.copy(DASHBOARDS / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "wrong_test.yml").write_text(yaml.safe_dump({
        "rule_files": ["alerts.yml"], "evaluation_interval": "1m",
        "tests": [{"name": "a quarantine that never happened", "interval": "1m",
                   "input_series": [{"series": 'ticketing_actor_events_quarantined{shard="0"}', "values": "0x5"}],
                   "alert_rule_test": [{"eval_time": "5m", "alertname": "TicketingEventQuarantined",
                                        "exp_alerts": [{"exp_labels": {"severity": "page", "shard": "0"}}]}]}]}))
    result = promtool("test", "rules", "wrong_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "got:[]" in result.stdout + result.stderr, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = set(alerts())
    assert len(names) > 20
    firing = {alert for _, alert, fires in cases() if fires}
    quiet = {alert for _, alert, fires in cases() if not fires}
    assert {"without a firing case": sorted(names - firing), "without a quiet case": sorted(names - quiet)} == {
        "without a firing case": [], "without a quiet case": []}


def test_every_case_names_an_alert_of_the_rule_files() -> None:
    names = set(alerts())
    assert [(test, alert) for test, alert, _ in cases() if alert not in names] == []


def test_every_alert_links_its_own_runbook_section() -> None:
    anchors = operations_anchors()
    problems = {}
    for name, rule in alerts().items():
        runbook = rule.get("annotations", {}).get("runbook", "")
        expected = f"docs/operations.md#{name.lower()}"
        if runbook != expected:
            problems[name] = f"runbook is {runbook!r}, not {expected!r}"
        elif name.lower() not in anchors:
            problems[name] = f"docs/operations.md has no heading '{name}'"
        elif rule.get("labels", {}).get("severity") not in SEVERITIES or not rule["annotations"].get("summary"):
            problems[name] = "a severity of page/ticket/warn/info and a summary, please"
    assert problems == {}


def test_the_anchor_rule_is_githubs() -> None:
    assert github_anchor(" TicketingCommitFailures") == "ticketingcommitfailures"
    assert github_anchor("How to drain a node") == "how-to-drain-a-node"
    assert github_anchor("Start, stop, clean up") == "start-stop-clean-up"
