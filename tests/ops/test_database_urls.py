"""A DSN's secrets taken off what goes on a command line (archomata.ops.database_urls);
the real pg_dump and pg_restore with them: tests/ops/test_backup.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from archomata.config import ConfigError
from archomata.ops.database_urls import libpq_target, split_secrets


class TestSplitSecrets:
    @pytest.mark.parametrize(("dsn", "target", "found"), [
        ("postgresql://u:p%40ss@h:5432/d", "postgresql://u@h:5432/d", {"password": "p@ss"}),
        ("postgresql://u@h/d?password=a+b%26c&sslmode=require",
         "postgresql://u@h/d?sslmode=require", {"password": "a+b&c"}),
        # The query's wins, as libpq has it; any spelling of the name is taken off.
        ("postgresql://u:netloc@h/d?PassWord=query", "postgresql://u@h/d",
         {"password": "query"}),
        ("postgresql://u@[::1]:5/d?sslmode=verify-full&sslpassword=k&application_name=x",
         "postgresql://u@[::1]:5/d?sslmode=verify-full&application_name=x",
         {"sslpassword": "k"}),
        ("postgresql://u@h/d?passfile=/run/pgpass", "postgresql://u@h/d?passfile=/run/pgpass",
         {}),
    ])
    def test_every_secret_leaves_the_dsn(self, dsn: str, target: str,
                                         found: dict[str, str]) -> None:
        assert split_secrets(dsn) == (target, found)


class TestLibpqTarget:
    def test_the_password_goes_in_the_environment_and_archomata_settings_stay_behind(
            self) -> None:
        environ = {"PATH": "/bin", "ARCHOMATA_DATA_KEY": "k", "PGPASSWORD": "stale"}
        with libpq_target("postgresql://u@h/d?password=s3cret", environ) as (target, env):
            assert target == "postgresql://u@h/d"
            assert env == {"PATH": "/bin", "PGPASSWORD": "s3cret"}

    def test_an_sslpassword_goes_in_a_private_service_file_removed_after(self) -> None:
        with libpq_target("postgresql://u@h/d?sslpassword=k3y", {}) as (target, env):
            service_file = Path(env["PGSERVICEFILE"])
            assert target == "postgresql://u@h/d" and env["PGSERVICE"] == "archomata_secrets"
            assert service_file.read_text() == "[archomata_secrets]\nsslpassword=k3y\n"
            assert service_file.stat().st_mode & 0o777 == 0o600
            assert service_file.parent.stat().st_mode & 0o777 == 0o700
        assert not service_file.exists() and not service_file.parent.exists()

    @pytest.mark.parametrize(("dsn", "environ"), [
        ("postgresql://u@h/d?sslpassword=k&service=prod", {}),
        ("postgresql://u@h/d?sslpassword=k", {"PGSERVICE": "prod"}),
        ("postgresql://u@h/d?sslpassword=k%0Ahost%3Devil", {}),
        ("postgresql://u@h/d?sslpassword=k%20", {}),
    ])
    def test_what_a_service_file_cannot_carry_is_refused_naming_no_secret(
            self, dsn: str, environ: dict[str, str]) -> None:
        with pytest.raises(ConfigError) as refused, libpq_target(dsn, environ):
            pass
        assert "evil" not in str(refused.value) and "sslpassword=" not in str(refused.value)
