"""Who may do what to a path, by the kernel's rules, for users we are not.

Three things ask: vacuum (may the uid/gid we drop to remove our socket and
pidfile? -- vacuum.py), the start-up warning for a unix socket nginx's worker
user cannot connect to (connect() needs write permission on the socket and
search permission on every directory above it; otherwise nginx answers 502
with ``connect() ... (13: Permission denied)``), and ``--check``, which
predicts both.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

R, W, X = 4, 2, 1
# The users nginx's workers usually run as (Debian/Ubuntu, RHEL/Alpine/the
# official image, nginx's compiled-in default).
NGINX_USERS = ("www-data", "nginx", "nobody")


@dataclass(frozen=True)
class Ids:
    """A process's credentials as the kernel checks them."""

    uid: int
    gids: frozenset
    name: str = ""


@dataclass(frozen=True)
class Mode:
    """What ``os.stat`` says about a path (or what bind would make of it)."""

    st_uid: int
    st_gid: int
    st_mode: int


def user_ids(user: pwd.struct_passwd, gid: int | None = None) -> Ids:
    """A user's ids after ``initgroups`` (its supplementary groups included)."""
    primary = user.pw_gid if gid is None else gid
    try:
        groups = set(os.getgrouplist(user.pw_name, primary))
    except OSError:
        groups = set()
    return Ids(user.pw_uid, frozenset(groups | {primary}), user.pw_name)


def current_ids() -> Ids:
    return Ids(os.geteuid(), frozenset(set(os.getgroups()) | {os.getegid()}))


def resolve(uid_spec, gid_spec) -> tuple[pwd.struct_passwd | None, int | None]:
    """``uid``/``gid`` options -> (user entry or None, gid or None); KeyError names
    an unknown user or group."""
    user = None
    if uid_spec:
        user = (pwd.getpwuid(int(uid_spec)) if str(uid_spec).isdigit()
                else pwd.getpwnam(str(uid_spec)))
    gid = None
    if gid_spec:
        gid = int(gid_spec) if str(gid_spec).isdigit() else grp.getgrnam(str(gid_spec)).gr_gid
    if gid is None and user is not None:
        gid = user.pw_gid
    return user, gid


def target_ids(uid_spec, gid_spec) -> Ids | None:
    """The ids the server runs with once it has dropped privileges as
    ``server.drop_privileges`` does; None when nothing is dropped."""
    if not uid_spec and not gid_spec:
        return None
    user, gid = resolve(uid_spec, gid_spec)
    if user is not None:
        return user_ids(user, gid)
    return Ids(os.geteuid(), frozenset({gid}))


def allows(st, ids: Ids, bits: int) -> bool:
    """Whether ``ids`` get ``bits`` (R|W|X) on a file with ``st``'s owner and mode:
    the owner class if the uid matches, else the group class, else other."""
    if ids.uid == 0:
        return True
    if st.st_uid == ids.uid:
        shift = 6
    elif st.st_gid in ids.gids:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def blocking_dir(path: str, ids: Ids) -> tuple[str, os.stat_result] | None:
    """The first directory above ``path`` that ``ids`` may not search, if any
    (directories that do not exist are passed over)."""
    parts = os.path.dirname(os.path.abspath(path)).split(os.sep)
    for i in range(1, len(parts) + 1):
        directory = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(directory)
        except OSError:
            return None
        if not allows(st, ids, X):
            return directory, st
    return None


def can_unlink(path: str, ids: Ids) -> bool:
    """Whether ``ids`` may remove ``path``: write and search permission on its
    directory, and in a sticky directory (/tmp) owning the file or the directory."""
    if ids.uid == 0:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    try:
        dir_st = os.stat(directory)
        file_st = os.lstat(path)
    except OSError:
        return True  # nothing there to remove
    if blocking_dir(path, ids) is not None or not allows(dir_st, ids, W | X):
        return False
    return not (dir_st.st_mode & stat.S_ISVTX and ids.uid not in (dir_st.st_uid,
                                                                  file_st.st_uid))


def nginx_users() -> list[Ids]:
    found = []
    for name in NGINX_USERS:
        try:
            found.append(user_ids(pwd.getpwnam(name)))
        except KeyError:
            continue
    return found


def owner_text(st) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "%s:%s mode %04o" % (user, group, stat.S_IMODE(st.st_mode))


def socket_warning(path: str, st) -> str | None:
    """Why none of the nginx users present here could connect to the unix socket
    ``path`` with owner and mode ``st``; None if one can, or none exists."""
    users = nginx_users()
    if not users:
        return None
    names = ", ".join(u.name for u in users)
    consequence = ("so nginx would answer 502 (connect() to unix:%s failed (13: Permission "
                   "denied))" % path)
    if not any(allows(st, u, W) for u in users):
        first = users[0]
        try:
            group = grp.getgrgid(pwd.getpwnam(first.name).pw_gid).gr_name
        except KeyError:
            group = first.name
        return ("socket %s is %s: none of the users nginx usually runs as (%s) may connect "
                "to it, %s; set chown-socket = %s:%s (nginx's user), or chmod-socket = 660 "
                "with chown-socket giving the socket a group nginx's user is in"
                % (path, owner_text(st), names, consequence, first.name, group))
    blocked = [blocking_dir(path, u) for u in users if allows(st, u, W)]
    if all(blocked):
        directory, dir_st = blocked[0]
        return ("socket %s: directory %s (%s) does not let the users nginx usually runs as "
                "(%s) through to it, %s; put the socket in a directory they can search "
                "(chmod o+x %s, or a group of theirs)"
                % (path, directory, owner_text(dir_st), names, consequence, directory))
    return None
