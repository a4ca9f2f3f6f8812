"""docs/alerts.yml: Prometheus rules that load (`promtool check rules` when promtool is on
PATH), shaped as Prometheus wants them, each naming only series the service exports (a
real app's /metrics, scraped) or Prometheus and its blackbox exporter make."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"
# Series the rules may name that the service does not export: Prometheus's own `up`, and
# the blackbox exporter's probe of /health/ready (docs/deployment.md).
NOT_OURS = {"up", "probe_success"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "absent", "histogram_quantile", "delta", "deriv", "time", "vector", "clamp_min",
    "clamp_max", "topk", "bottomk", "avg_over_time", "max_over_time", "min_over_time"}
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def series_named(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers, less label matchers,
    strings, durations and PromQL's own words."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    names = set(re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return names - PROMQL_WORDS


def exported(text: str) -> set[str]:
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE))
    return names | {name + part for name in names for part in HISTOGRAM_PARTS}


def test_the_rule_file_is_shaped_as_prometheus_reads_it() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
    found = rules()
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names))
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"page", "warning"}
        assert rule["annotations"]["summary"]
        assert series_named(rule["expr"]), rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_promtool_accepts_it() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (the structure and names are checked apart)")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_every_series_a_rule_names_is_exported(client: Any) -> None:
    text = await (await client.get("/metrics")).text()
    ours = exported(text)
    named = {name for rule in rules() for name in series_named(rule["expr"])}
    assert named - NOT_OURS <= ours, sorted(named - NOT_OURS - ours)
    # The operator's signals are all covered by some rule.
    for needed in ("archomata_http_requests_total", "archomata_logins_total",
                   "archomata_refresh_reuse_detected_total",
                   "archomata_bridge_oldest_waiting_seconds",
                   "archomata_bridge_agents_online", "archomata_mail_failures_total"):
        assert needed in named, needed


def test_the_name_check_sees_a_series_no_one_exports() -> None:
    named = series_named('sum by (stage) (rate(archomata_no_such_total{a="b"}[5m])) > 0')
    assert named == {"archomata_no_such_total"}
    assert not named <= exported("# TYPE archomata_mail_failures counter\n")


async def test_the_deployment_guide_lists_every_series_of_ours(client: Any) -> None:
    text = await (await client.get("/metrics")).text()
    guide = (ALERTS.parent / "deployment.md").read_text()
    families = set(re.findall(r"^# TYPE (archomata_\w+) ", text, re.MULTILINE))
    assert len(families) >= 15
    for name in families:
        assert f"`{name}`" in guide, name
