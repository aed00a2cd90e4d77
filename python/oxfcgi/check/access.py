"""Who may do what to a path: permissions computed for another user from ``st_mode``,
owner, group and the user's groups (``os.access`` only knows the current process)."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    """A user as the kernel sees it: ``uid``, primary ``gid`` and all group ids ``gids``."""

    name: str
    uid: int
    gid: int
    gids: frozenset[int]
    home: str

    @classmethod
    def lookup(cls, user: str | int) -> Account:
        """By name or numeric uid; ``KeyError`` if there is no such user."""
        if isinstance(user, int) or (isinstance(user, str) and user.isdigit()):
            pw = pwd.getpwuid(int(user))
        else:
            pw = pwd.getpwnam(user)
        try:
            gids = frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
        except OSError:
            gids = frozenset([pw.pw_gid] + [g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem])
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, gids, pw.pw_dir)

    def describe(self) -> str:
        names = []
        for gid in sorted(self.gids):
            names.append(group_name(gid))
        return f"{self.name} (uid {self.uid}, groups {','.join(names)})"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def ls(path: str, st: os.stat_result | None = None) -> str:
    """``-rwxr-xr-x root:root /path``, as ``ls -l`` would show it."""
    if st is None:
        st = os.lstat(path)
    return f"{stat.filemode(st.st_mode)} {user_name(st.st_uid)}:{group_name(st.st_gid)} {path}"


_BITS = {
    "r": (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH),
    "w": (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH),
    "x": (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH),
}


def allowed(st: os.stat_result, who: Account, want: str) -> bool:
    """Would the kernel grant ``who`` each of ``want`` ("r", "w", "x") on a file with ``st``?

    Classic Unix rules: root may read and write anything and execute anything with some x bit
    (directories always); otherwise exactly one of the owner, group or other classes applies.
    POSIX ACLs are not consulted."""
    if who.uid == 0:
        if "x" in want and not stat.S_ISDIR(st.st_mode):
            return bool(st.st_mode & 0o111)
        return True
    cls = 0 if st.st_uid == who.uid else 1 if st.st_gid in who.gids else 2
    return all(st.st_mode & _BITS[w][cls] for w in want)


def chmod_fix(path: str, st: os.stat_result, who: Account, want: str) -> str:
    """The smallest chmod that grants ``want`` to ``who``."""
    cls = "u" if st.st_uid == who.uid else "g" if st.st_gid in who.gids else "o"
    return f"chmod {cls}+{want} {shlex.quote(path)}"


@dataclass
class Blocked:
    """Why ``who`` cannot reach a path: the component, its stat, what was missing."""

    path: str
    st: os.stat_result
    want: str
    is_dir: bool


class Unknown(Exception):
    """The current user cannot stat a component, so nothing can be said for another user."""


def _parents(path: str) -> list[str]:
    out = []
    d = os.path.dirname(path)
    while True:
        out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return list(reversed(out))


def path_blocked(path: str, who: Account, want: str) -> Blocked | None:
    """The first obstacle for ``who`` to get ``want`` on ``path``: a directory on the way
    (lexical and symlink-resolved) without x, or the file itself lacking a bit. None if none.

    :raises Unknown: a component cannot be stat()ed by the current process.
    :raises FileNotFoundError: the path does not exist."""
    path = os.path.abspath(path)
    real = os.path.realpath(path)
    dirs = []
    for d in _parents(path) + _parents(real):
        if d not in dirs:
            dirs.append(d)
    for d in dirs:
        try:
            st = os.stat(d)
        except PermissionError as e:
            raise Unknown(d) from e
        if not allowed(st, who, "x"):
            return Blocked(d, st, "x", True)
    try:
        st = os.stat(real)
    except PermissionError as e:
        raise Unknown(real) from e
    missing = "".join(w for w in want if not allowed(st, who, w))
    if missing:
        return Blocked(real, st, missing, stat.S_ISDIR(st.st_mode))
    return None


def blocked_fix(b: Blocked, who: Account) -> str:
    return chmod_fix(b.path, b.st, who, b.want)
