"""The README's "First five minutes" runs as written: its ```sh blocks, in order, in one
bash with `set -euo pipefail`, against a real `archomata dev` started from a private
home (tests/ops/test_dev.py's fixture), from that checkout's folder as a newcomer would.
A command that breaks, a route renamed, a body changed: this test fails, so the README
cannot drift from the product.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops import test_dev
from tests.ops.test_dev import DevRun

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## First five minutes"

dev_run = test_dev.dev_run  # the same real `make run` stack (module scope: one per module)


def journey_blocks(text: str) -> list[str]:
    """The section's ```sh blocks, in order."""
    start = text.index(f"\n{HEADING}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def test_the_section_covers_the_journey_and_stops_on_errors() -> None:
    blocks = journey_blocks(README.read_text())
    script = "\n".join(blocks)
    for route in ("/auth/login", "/me", "/agents", "/accounts", "/orders",
                  "/bridge/commands", "/audit-logs", "/audit-logs/export", "/me/mfa/totp",
                  "/me/mfa/totp/confirm", "/auth/refresh", "/auth/logout"):
        assert f"/api/v1{route}" in script, route
    # Every request fails the run on an error answer, except the one that shows a status.
    for call in re.findall(r"curl [^\n]*", script):
        assert "--fail-with-body" in call or "%{http_code}" in call, call
    assert "Origin: $ORIGIN" in script  # refresh needs it, and the README says so


def _run(run: DevRun) -> subprocess.CompletedProcess[str]:
    """The blocks as one script, each announced, from the checkout (`.local` is there;
    `.venv` is this test's virtualenv, as in a checkout after `make run`)."""
    venv = run.checkout / ".venv"
    if not venv.exists():
        venv.symlink_to(sys.prefix, target_is_directory=True)
    blocks = journey_blocks(README.read_text())
    script = "set -euo pipefail\n" + "".join(
        f"echo '::step {n}' >&2\n{block}" for n, block in enumerate(blocks, 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHOMATA_")}
    env.update(BASE=run.url, ORIGIN=run.frontend)
    return subprocess.run(["bash", "-c", script], cwd=run.checkout, env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.mark.slow
def test_the_first_five_minutes_run_as_written(dev_run: DevRun) -> None:
    audit_csv = dev_run.checkout / ".local" / "audit.csv"
    audit_csv.unlink(missing_ok=True)
    result = _run(dev_run)
    steps = re.findall(r"::step (\d+)", result.stderr)
    assert result.returncode == 0, (
        f"the README's block {steps[-1] if steps else '?'} failed "
        f"(exit {result.returncode}):\n{result.stderr[-3000:]}\n{result.stdout[-3000:]}")
    lines = result.stdout.splitlines()
    assert "filled" in lines  # the order, once the simulated agent reported its fill
    assert "True" in lines  # GET /me/mfa after the confirmation: TOTP is on
    assert lines[-1] == "401"  # the refresh cookie of a logged-out session is dead
    with audit_csv.open(newline="") as exported:
        rows = list(csv.DictReader(exported))
    actions = {row["action"] for row in rows}
    assert {"auth.login.succeeded", "agent.created", "order.created", "order.executed"} <= actions
