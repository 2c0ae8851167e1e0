"""The shipped alerting rules and dashboard: valid for promtool and Grafana, and they fire."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from mirrord.metrics import mirrord_families
from takeover.metrics import takeover_families
from tests.unit.test_metrics import BASE, mirrord_doc, scrape, takeover_doc

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "conf" / "prometheus" / "hapair.rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "hapair.test.yml"
DASHBOARD = ROOT / "conf" / "grafana" / "hapair.json"
METRIC_RE = re.compile(r"\bhapair_[a-z_]+")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian package prometheus; scripts/bootstrap.sh installs it)."""
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120
    )


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` accepts conf/prometheus/hapair.rules.yml."""
    p = promtool("check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_alerts_fire_on_the_series_that_mean_them() -> None:
    """Two owners, peer lost, fencing failed, RPO over threshold and mirror alarm fire on
    series that mean them, and not before their `for` (promtool test rules)."""
    p = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert p.returncode == 0, p.stdout + p.stderr


def exported_names() -> set[str]:
    """Return every sample name the two mappings expose for full status documents."""
    names = set()
    for families, doc, base in (
        (takeover_families, takeover_doc(), BASE),
        (mirrord_families, mirrord_doc(), {"node": "a"}),
    ):
        names |= {name for name, _ in scrape(families, doc, base)}
    return names


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    """Every metric the rules and the dashboard query is one the daemons export."""
    known = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "dashboard has no panels"
    for path in (RULES, DASHBOARD):
        used = set(METRIC_RE.findall(path.read_text()))
        assert used, path
        assert used <= known, (path.name, sorted(used - known))
