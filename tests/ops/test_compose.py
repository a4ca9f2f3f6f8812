"""compose.yaml against the README: it parses, starts the service only after the
migration job succeeded, sets only documented variables, every one `serve` requires, and
no secret in clear."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def configuration_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Configuration"):readme.index("\n## ", readme.index(
        "## Configuration") + 1)]


def documented() -> set[str]:
    return set(re.findall(r"`(ARCHOMATA_[A-Z0-9_]+)`", configuration_section()))


def required() -> set[str]:
    rows = [line for line in configuration_section().splitlines()
            if line.startswith("| `ARCHOMATA_") and line.split("|")[2].strip() == "required"]
    return {re.findall(r"`(ARCHOMATA_[A-Z0-9_]+)`", row)[0] for row in rows}


def environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"][service]["environment"].items()}


def test_the_services_and_their_order() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "api"} <= set(services)
    assert services["api"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "--appendonly" in services["redis"]["command"]


def test_only_documented_variables_and_every_required_one() -> None:
    names = documented()
    assert {"ARCHOMATA_DATABASE_URL", "ARCHOMATA_SHUTDOWN_GRACE_SECONDS"} <= names  # read
    for service in ("migrate", "api"):
        used = {k for k in environment(service) if k.startswith("ARCHOMATA_")}
        assert used <= names, used - names
    assert required() == {"ARCHOMATA_DATABASE_URL", "ARCHOMATA_JWT_SECRETS",
                          "ARCHOMATA_DATA_KEY", "ARCHOMATA_AUDIT_KEY"}
    assert required() <= set(environment("api"))
    assert environment("migrate")["ARCHOMATA_DATABASE_OWNER_URL"] != \
        environment("api")["ARCHOMATA_DATABASE_URL"]
    assert "ARCHOMATA_DATABASE_OWNER_URL" not in environment("api")  # serve: runtime only


def test_no_secret_is_written_in_it() -> None:
    for service in compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|KEY|PASSWORD", name):
                assert str(value).startswith("${"), f"{name} is written in compose.yaml"
    # Credentials in a URL come from the environment too: no user:password@ in clear.
    assert not re.search(r"://[^:/@\s]+:[^$@\s]+@", (ROOT / "compose.yaml").read_text())


def test_the_service_outlives_its_own_grace() -> None:
    api = compose()["services"]["api"]
    grace = int(environment("api")["ARCHOMATA_SHUTDOWN_GRACE_SECONDS"])
    assert int(api["stop_grace_period"].rstrip("s")) > grace
