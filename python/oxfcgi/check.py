"""``oxfcgi check``: find what would make a FastCGI deployment fail, before the web server does.

    oxfcgi check TARGET [--user USER] [--socket PATH] [--python PATH]

TARGET is a script the web server runs (``/srv/app/app.fcgi``, ``app.py``) or a WSGI
application ``module:attr`` (as given to ``oxfcgi serve``). Every problem is reported as
one block: a title, what was seen (paths, modes, values) and the fix (a command or a
config line). Checks that passed are listed briefly after the problems.

What is checked, as the web server would do it:

- the script: a ``#!`` line, CRLF line endings, a UTF-8 BOM, the interpreter exists and
  USER may execute it, ``#!/usr/bin/env python3`` resolved on mod_fcgid's PATH
  (``/usr/local/bin:/usr/bin:/bin``), the exec and read bits for USER, every parent
  directory traversable by USER, a ``noexec`` mount, group/other-writable files (suEXEC
  refuses them), and that the script calls ``run()`` / ``WSGIServer(...).run()``;
- the interpreter can import oxfcgi, and the application imports, in a child process
  running **as USER** with mod_fcgid's minimal environment (only ``PATH``), from the
  script's directory (mod_fcgid's working directory). A traceback is shown when it fails;
  if it only imports thanks to ``PYTHONPATH`` or an activated virtualenv of the current
  shell, that is said, with the fix;
- ``module:attr`` targets: importable and callable;
- ``--socket PATH``: exists, is a socket, something answers (and speaks FastCGI), and
  USER can connect (socket mode/owner/group and directory traversal).

Permissions for a USER other than the current one are computed from ``st_mode``, owner,
group and USER's groups (no ``os.access``). When not running as root and USER is not the
current user, the import and the socket connection cannot be tried as USER; the report
lists what could not be checked.

Exit status: 0 when nothing would fail (warnings allowed), 1 when something would fail,
2 for a usage error (unknown user, ``--python`` not found).
"""
from __future__ import annotations

import argparse
import ast
import errno
import grp
import json
import os
import pwd
import shlex
import shutil
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["MOD_FCGID_PATH", "Account", "Finding", "Report", "run_checks", "add_parser", "main"]

#: The PATH a process spawned by mod_fcgid gets on Debian (httpd's own PATH); nothing else
#: from the shell reaches it (deployment notes §1.1).
MOD_FCGID_PATH = "/usr/local/bin:/usr/bin:/bin"

#: Variables a shell often has that mod_fcgid (and suEXEC) do not pass to the app.
SHELL_ONLY_VARS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "HOME", "LANG",
                   "LC_ALL", "LC_CTYPE", "PYTHONUSERBASE")

#: Seconds the application may take to import before the check gives up on it.
IMPORT_TIMEOUT = 30.0

#: Seconds to wait for a socket to accept and answer FCGI_GET_VALUES.
SOCKET_TIMEOUT = 3.0

FAIL, WARN, OK, NOTE, SKIP = "FAIL", "WARN", "ok", "note", "skip"

_MARK = "@@OXFCGI-CHECK@@"


# --- accounts and permissions -----------------------------------------------------------

@dataclass(frozen=True)
class Account:
    """A user as the kernel sees it: ``uid``, primary ``gid`` and all group ids ``gids``."""

    name: str
    uid: int
    gid: int
    gids: frozenset
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
            names.append(_group_name(gid))
        return f"{self.name} (uid {self.uid}, groups {','.join(names)})"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _ls(path: str, st: os.stat_result | None = None) -> str:
    """``-rwxr-xr-x root:root /path``, as ``ls -l`` would show it."""
    if st is None:
        st = os.lstat(path)
    return f"{stat.filemode(st.st_mode)} {_user_name(st.st_uid)}:{_group_name(st.st_gid)} {path}"


_BITS = {"r": (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH),
         "w": (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH),
         "x": (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)}


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


def _chmod_fix(path: str, st: os.stat_result, who: Account, want: str) -> str:
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


def _blocked_fix(b: Blocked, who: Account) -> str:
    return _chmod_fix(b.path, b.st, who, b.want)


# --- the report -------------------------------------------------------------------------

@dataclass
class Finding:
    """One line of the report. ``level`` is FAIL, WARN, ok, note or skip."""
    level: str
    title: str
    saw: list = field(default_factory=list)
    fix: list = field(default_factory=list)


class Report:
    """Findings in the order found; :meth:`render` lays them out for a terminal."""

    def __init__(self, header: str = ""):
        self.header = header
        self.findings: list[Finding] = []

    def add(self, level: str, title: str, saw: Iterable[str] | str = (), fix: Iterable[str] | str = ()) -> Finding:
        f = Finding(level, title, [saw] if isinstance(saw, str) else list(saw),
                    [fix] if isinstance(fix, str) else list(fix))
        self.findings.append(f)
        return f

    def fail(self, title, saw=(), fix=()):
        return self.add(FAIL, title, saw, fix)

    def warn(self, title, saw=(), fix=()):
        return self.add(WARN, title, saw, fix)

    def ok(self, title, saw=()):
        return self.add(OK, title, saw)

    def note(self, title, saw=()):
        return self.add(NOTE, title, saw)

    def skip(self, title, saw=()):
        return self.add(SKIP, title, saw)

    def levels(self, level: str) -> list[Finding]:
        return [f for f in self.findings if f.level == level]

    @property
    def exit_status(self) -> int:
        """1 if any finding is FAIL, else 0."""
        return 1 if self.levels(FAIL) else 0

    def render(self) -> str:
        lines = []
        if self.header:
            lines += [self.header, ""]
        for f in self.findings:
            if f.level not in (FAIL, WARN):
                continue
            lines.append(f"{f.level:<5} {f.title}")
            for label, items in (("saw:", f.saw), ("fix:", f.fix)):
                for i, item in enumerate(items):
                    for j, text in enumerate(str(item).splitlines() or [""]):
                        prefix = label if i == 0 and j == 0 else ""
                        lines.append(f"      {prefix:<5} {text}".rstrip())
            lines.append("")
        for level, heading in ((OK, "Passed:"), (NOTE, "Notes:"), (SKIP, "Not checked:")):
            group = self.levels(level)
            if not group:
                continue
            lines.append(heading)
            for f in group:
                lines.append(f"  {f.title}")
                for item in f.saw:
                    for text in str(item).splitlines():
                        lines.append(f"      {text}")
            lines.append("")
        n_fail, n_warn = len(self.levels(FAIL)), len(self.levels(WARN))
        if n_fail:
            verdict = f"{n_fail} problem{'s' if n_fail != 1 else ''} that would make it fail"
        else:
            verdict = "nothing that would make it fail"
        if n_warn:
            verdict += f", {n_warn} warning{'s' if n_warn != 1 else ''}"
        lines.append(f"Result: {verdict} (exit status {self.exit_status}).")
        return "\n".join(lines) + "\n"


# --- the probe run inside the target interpreter, as USER ------------------------------

# argv: MODE TARGET. MODE "script": execute TARGET as __main__ the way the web server does,
# with oxfcgi.run()/WSGIServer.run() captured (armed even if oxfcgi is only found after the
# script edits sys.path). MODE "module": oxfcgi._loader.load_app(TARGET). MODE "interp":
# only report the interpreter. The result is one JSON line after a marker on fd 1.
_PROBE = r'''
import json, os, sys, traceback
MARK = "@@OXFCGI-CHECK@@"
out = {"executable": sys.executable, "version": sys.version.split()[0], "prefix": sys.prefix,
       "base_prefix": getattr(sys, "base_prefix", sys.prefix), "uid": os.getuid(), "cwd": os.getcwd()}
def emit():
    data = (chr(10) + MARK + json.dumps(out) + chr(10)).encode()
    try:
        os.write(1, data)
    except OSError:
        pass
def clean_tb(e):
    tb = e.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename in ("<string>", __file__ if "__file__" in globals() else "")
                              or "importlib" in tb.tb_frame.f_code.co_filename
                              or tb.tb_frame.f_code.co_filename.endswith(("_loader.py",))):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb)).rstrip()
mode, target = sys.argv[1], sys.argv[2]
try:
    import oxfcgi
    out["oxfcgi"] = os.path.dirname(getattr(oxfcgi, "__file__", "") or "")
except BaseException as e:
    out["oxfcgi_error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
if mode == "interp":
    emit(); os._exit(0)
def arm(L):
    L._capturing += 1
    orig = L.intercept
    def spy(app):
        out["run_called"] = True
        orig(app)
    L.intercept = spy
if "oxfcgi" in out:
    try:
        import oxfcgi._loader as L
        arm(L)
        aliases = L._FlupAliases()
    except BaseException as e:
        out["oxfcgi_error"] = "oxfcgi is too old for this check: " + repr(e)
        L = None
else:
    L = None
    import importlib.abc, importlib.util
    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "oxfcgi._loader":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                orig_exec = spec.loader.exec_module
                def exec_module(module, orig_exec=orig_exec):
                    orig_exec(module)
                    arm(module)
                spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, _Hook())
app = None
found = False
try:
    if mode == "module":
        if L is None:
            raise ImportError("oxfcgi cannot be imported, so 'oxfcgi serve' cannot start: " + out.get("oxfcgi_error", ""))
        app = L.load_app(target)
        found = True
    else:
        import types
        sys.argv = [target]
        sys.path[0] = os.path.dirname(target)
        module = types.ModuleType("__main__")
        module.__file__ = target
        module.__builtins__ = __builtins__
        sys.modules["__main__"] = module
        with open(target, "rb") as f:
            source = f.read()
        code = compile(source, target, "exec")
        if L is not None:
            with aliases:
                exec(code, module.__dict__)
        else:
            exec(code, module.__dict__)
        for attr in ("application", "app"):
            if attr in module.__dict__:
                app, found = module.__dict__[attr], True
                out["attr"] = attr
                break
except BaseException as e:
    if type(e).__name__ == "AppCaptured":
        app, found = e.app, True
        out["run_called"] = True
    elif type(e).__name__ == "LoadError":
        out["error"] = str(e)
    elif isinstance(e, SystemExit):
        out["exit"] = repr(e.code)
    else:
        out["error"] = clean_tb(e)
        if isinstance(e, ModuleNotFoundError):
            out["missing_module"] = e.name
if found:
    out["found"] = True
    out["callable"] = callable(app)
    out["app_type"] = (type(app).__module__ + "." if type(app).__module__ != "builtins" else "") + type(app).__qualname__
emit()
os._exit(0)
'''


@dataclass
class ProbeResult:
    """What the probe saw; ``launch_error`` is set when the interpreter could not even start."""
    data: dict
    returncode: int | None
    stdout: str
    stderr: str
    launch_error: str | None = None
    timed_out: bool = False
    as_user: bool = True

    @property
    def ran(self) -> bool:
        return self.launch_error is None and not self.timed_out and bool(self.data)


def _probe(interp: str, mode: str, target: str, cwd: str, env: dict, ctx: _Context) -> ProbeResult:
    kwargs = {}
    as_user = True
    if ctx.me.uid != ctx.user.uid:
        if os.geteuid() == 0:
            kwargs = {"user": ctx.user.uid, "group": ctx.user.gid,
                      "extra_groups": sorted(ctx.user.gids)}
        else:
            as_user = False
    try:
        proc = subprocess.run([interp, "-c", _PROBE, mode, target], cwd=cwd, env=env, check=False,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=IMPORT_TIMEOUT, **kwargs)
    except subprocess.TimeoutExpired as e:
        return ProbeResult({}, None, _text(e.stdout), _text(e.stderr), timed_out=True, as_user=as_user)
    except OSError as e:
        where = f" (working directory {cwd})" if e.filename == cwd or (e.errno == errno.EACCES and cwd) else ""
        return ProbeResult({}, None, "", "", launch_error=f"{e.strerror or e}{where}", as_user=as_user)
    out = _text(proc.stdout)
    data = {}
    idx = out.rfind(_MARK)
    if idx >= 0:
        try:
            data = json.loads(out[idx + len(_MARK):].splitlines()[0])
        except (ValueError, IndexError):
            data = {}
        out = out[:idx].rstrip("\n")
    return ProbeResult(data, proc.returncode, out, _text(proc.stderr), as_user=as_user)


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def _tail(text: str, n: int = 25) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > n:
        lines = [f"... ({len(lines) - n} lines cut)"] + lines[-n:]
    return "\n".join(lines)


# --- the checks -------------------------------------------------------------------------

@dataclass
class _Context:
    report: Report
    user: Account
    me: Account
    python: str | None
    env: dict            # the current process environment
    script: str | None = None                 # absolute path of a script target
    env_diff: tuple | None = None             # (prog, found on mod_fcgid's PATH, found on yours)
    not_python: bool = False                  # the #! line runs something else (a wrapper)
    calls_run: bool | None = None             # _static_run_call() of the script
    env_python_reported: bool = False         # "the #! line picks another python" was said

    @property
    def is_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def other_user(self) -> bool:
        return self.user.uid != self.me.uid

    @property
    def can_act_as_user(self) -> bool:
        return not self.other_user or self.is_root

    def minimal_env(self) -> dict:
        return {"PATH": MOD_FCGID_PATH}


def _which(name: str, path: str, who: Account) -> tuple[str | None, list[str]]:
    """execvp's search: the first ``path`` entry holding ``name`` that ``who`` may execute.
    Returns (found, [candidates skipped because not executable])."""
    if "/" in name:
        return (name if os.path.exists(name) else None), []
    skipped = []
    for d in path.split(os.pathsep):
        cand = os.path.join(d or ".", name)
        if not os.path.isfile(cand):
            continue
        try:
            if path_blocked(cand, who, "x") is None:
                return cand, skipped
        except (Unknown, OSError):
            pass
        skipped.append(cand)
    return None, skipped


def _suggest_interp(ctx: _Context) -> str:
    """The interpreter to put in a shebang: --python, or the one running this check."""
    return ctx.python or sys.executable


def _replace_shebang_cmd(script: str, interp: str) -> str:
    return f"sed -i '1s|.*|#!{interp}|' {shlex.quote(script)}"


def _parse_shebang(line: bytes) -> tuple[str, str | None]:
    """Linux binfmt_script: interpreter up to the first blank, the rest as one argument."""
    text = line[2:].decode("utf-8", "surrogateescape").strip(" \t\n")
    if not text:
        return "", None
    parts = text.split(None, 1)
    return parts[0], (parts[1].strip(" \t") if len(parts) > 1 else None)


def _env_program(arg: str | None) -> str | None:
    """The program ``/usr/bin/env ARG`` runs (``env -S 'python3 -u'`` included)."""
    if not arg:
        return None
    words = arg.split()
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-S", "--split-string"):
            i += 1
            continue
        w = w.removeprefix("-S")
        if w.startswith("-") or ("=" in w and not w.startswith("/")):
            i += 1
            continue
        return w
    return None


def _is_python(path: str) -> bool:
    base = os.path.basename(os.path.realpath(path))
    return base.startswith(("python", "pypy")) or os.path.basename(path).startswith(("python", "pypy"))


def _static_run_call(source: bytes) -> bool | None:
    """Does the script call ``run(...)``, ``oxfcgi.run(...)`` or ``WSGIServer(...).run()``?
    None if it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    uses_server = b"WSGIServer" in source
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "run":
                return True
            if isinstance(f, ast.Attribute) and f.attr == "run":
                v = f.value
                if (isinstance(v, ast.Name) and v.id in ("oxfcgi", "fcgi")) or \
                   (isinstance(v, ast.Call) and "WSGIServer" in ast.dump(v.func)) or uses_server:
                    return True
    return False


def _report_parent_blocked(ctx: _Context, path: str, b: Blocked, what: str) -> None:
    """FAIL: a directory above ``path`` lacks x for USER."""
    ctx.report.fail(
        f"A parent directory of the {what} is not traversable by {ctx.user.name}",
        [_ls(b.path, b.st),
         f"{ctx.user.name} needs x (search) on every directory above {path}",
         "(fcgiwrap: \"Cannot chdir to script directory\"; Apache: \"Permission denied\" / 403)"],
        [_blocked_fix(b, ctx.user),
         f"(or keep others out: chgrp {_group_name(ctx.user.gid)} {shlex.quote(b.path)} && "
         f"chmod g+x {shlex.quote(b.path)})"])


def _check_interpreter_access(ctx: _Context, interp: str, origin: str) -> bool:
    """Interpreter exists and USER may execute it (file and directories)."""
    r = ctx.report
    suggestion = _suggest_interp(ctx)
    if not os.path.exists(interp):
        r.fail(f"The interpreter {interp} does not exist",
               [f"{origin} names {interp}: no such file",
                "(fcgiwrap: \"Cannot execute script\"; lighttpd: \"spawning gw failed\"; mod_fcgid: \"can't run\")"],
               [_replace_shebang_cmd(ctx.script, suggestion) if origin == "the #! line"
                else f"give the interpreter that has oxfcgi, e.g. --python {suggestion}"])
        return False
    try:
        b = path_blocked(interp, ctx.user, "x")
    except Unknown as e:
        r.skip(f"whether {ctx.user.name} can execute {interp}", f"{ctx.me.name} cannot stat {e.args[0]}")
        return True
    if b is not None:
        if b.is_dir and b.path != os.path.realpath(interp):
            why = f"directory {b.path} is not traversable by {ctx.user.name}"
        else:
            why = f"{ctx.user.name} has no execute permission on it"
        fixes = []
        if b.is_dir and b.path != os.path.realpath(interp):
            venv_py = "/srv/venv/bin/python3"
            then = (_replace_shebang_cmd(ctx.script, venv_py) if origin == "the #! line"
                    else f"start the app with {venv_py} (--python {venv_py})")
            fixes.append(f"use an interpreter {ctx.user.name} can reach, with oxfcgi installed, e.g. a venv "
                         f"outside {b.path}: python3 -m venv /srv/venv && /srv/venv/bin/pip install oxfcgi")
            fixes.append(f"  then: {then}")
            fixes.append(f"or open the directory: {_blocked_fix(b, ctx.user)}")
        else:
            fixes.append(_blocked_fix(b, ctx.user))
        r.fail(f"{ctx.user.name} cannot execute the interpreter {interp}",
               [f"{origin}: {interp}", why, _ls(b.path, b.st)], fixes)
        return False
    real = os.path.realpath(interp)
    r.ok(f"interpreter {interp}" + (f" (-> {real})" if real != interp else "") + f" is executable by {ctx.user.name}")
    return True


def _env_diff_note(ctx: _Context) -> None:
    present = [f"{k}={ctx.env[k]}" for k in SHELL_ONLY_VARS if ctx.env.get(k)]
    saw = [f"mod_fcgid passes only PATH={MOD_FCGID_PATH} (plus FcgidInitialEnv; suEXEC strips those "
           "and resets PATH); the import check runs with that environment"]
    if present:
        saw.append("your shell also has, and the web server will not pass: " + ", ".join(present))
    extra_path = [p for p in ctx.env.get("PATH", "").split(os.pathsep)
                  if p and p not in MOD_FCGID_PATH.split(os.pathsep)]
    if extra_path:
        saw.append("your PATH also has: " + os.pathsep.join(dict.fromkeys(extra_path)))
    ctx.report.note("environment", saw)


def _pythonpath_fix(ctx: _Context, script: str | None, entries: list[str]) -> list[str]:
    joined = ":".join(entries)
    fixes = []
    if script:
        inserts = "; ".join(f"sys.path.insert(0, {e!r})" for e in entries)
        fixes.append(f"put the path in the script, before the app's imports: import sys; {inserts}")
        fixes.append("or use a venv's python that has these packages in the #! line (#!/srv/venv/bin/python3)")
        fixes.append(f"or (Apache, no suEXEC) FcgidInitialEnv PYTHONPATH {joined}"
                     "   -- suEXEC (SuexecUserGroup) strips it")
    else:
        fixes.append(f"set it where the app is started: systemd Environment=PYTHONPATH={joined}; "
                     f"spawn-fcgi: env PYTHONPATH={joined} spawn-fcgi ...; "
                     "or install the app into the interpreter (pip install -e .)")
    return fixes


def _report_import(ctx: _Context, res: ProbeResult, interp: str, target: str, script: str | None,
                   cwd: str) -> None:
    """Turn the probe of the application into findings (and retry with the shell's
    PYTHONPATH to explain a failure that only the environment hides)."""
    r = ctx.report
    who = ctx.user.name if res.as_user else f"{ctx.me.name} (not {ctx.user.name}: needs root)"
    where = f"as {who}, cwd {cwd}, env PATH={MOD_FCGID_PATH} only, {interp}"
    if res.launch_error:
        r.fail(f"{interp} could not be started to import the app", [where, res.launch_error],
               [f"check that {ctx.user.name} can enter {cwd} and run {interp}"])
        return
    if res.timed_out:
        r.fail(f"Importing the app did not finish within {IMPORT_TIMEOUT:g} s",
               [where, "it may be serving something else (e.g. Flask's app.run()) or waiting on a "
                       "database/network at import time", _tail(res.stderr, 10)],
               ["make the import fast and side-effect free; serve with run(app) only"])
        return
    d = res.data
    if not d:
        r.fail("The app's import killed the interpreter",
               [where, f"exit status {res.returncode}", _tail(res.stderr or res.stdout)],
               ["run it by hand to see more: " + " ".join(shlex.quote(x) for x in [interp, script or '-c', 'import ' + target.split(':')[0]])])
        return
    ox_missing_first = "oxfcgi" not in d
    if d.get("exit") is not None:
        r.fail("The script calls sys.exit() while loading",
               [where, f"SystemExit({d['exit']})", _tail(res.stderr, 10)],
               ["started by the web server it would exit at once ('End of script output before headers'); "
                "remove the exit or move it after run(app)"])
        return
    if "error" in d:
        missing = d.get("missing_module")
        # Would it import with the shell's PYTHONPATH? Then the environment is the cause.
        extra = {k: ctx.env[k] for k in ("PYTHONPATH", "PYTHONHOME") if ctx.env.get(k)}
        if extra and ctx.can_act_as_user:
            env2 = dict(ctx.minimal_env(), **extra)
            res2 = _probe(interp, "script" if script else "module", target, cwd, env2, ctx)
            if res2.ran and "error" not in res2.data and res2.data.get("found"):
                entries = [e for e in extra.get("PYTHONPATH", "").split(":") if e]
                r.fail("The app imports only thanks to PYTHONPATH from your shell",
                       [where + ": " + d["error"].strip().splitlines()[-1],
                        f"with your {', '.join(f'{k}={v}' for k, v in extra.items())} it imports; "
                        "mod_fcgid passes only PATH and FcgidInitialEnv, and suEXEC drops PYTHONPATH too"],
                       _pythonpath_fix(ctx, script, entries) if entries else
                       ["do not rely on PYTHONHOME; use the interpreter of that installation in the #! line"])
                return
        if missing == "oxfcgi" and ox_missing_first and ctx.env_python_reported:
            return
        if missing == "oxfcgi" and ox_missing_first:
            fixes = [f"{interp} -m pip install oxfcgi"]
            suggestion = _suggest_interp(ctx)
            if script and suggestion != interp:
                fixes.append("or point the #! line at a python that has it: "
                             + _replace_shebang_cmd(script, suggestion))
                try:
                    if path_blocked(suggestion, ctx.user, "x") is not None:
                        fixes.append(f"  ({ctx.user.name} cannot run {suggestion}: make a venv it can reach, "
                                     "e.g. python3 -m venv /srv/venv && /srv/venv/bin/pip install oxfcgi)")
                except (Unknown, OSError):
                    pass
            r.fail(f"{interp} has no oxfcgi",
                   [f'{interp} -c "import oxfcgi": {d.get("oxfcgi_error", "")}', f"({where})"], fixes)
            return
        title = "The app fails to import"
        repro = ("to reproduce it as the web server does: "
                 + (f"cd {shlex.quote(cwd)} && " if cwd else "")
                 + (f"runuser -u {ctx.user.name} -- " if ctx.other_user else "")
                 + f"env -i PATH={MOD_FCGID_PATH} "
                 + (shlex.quote(script) if script else
                    f"{shlex.quote(interp)} -c 'import {target.split(':')[0]}'"))
        fixes = ["fix the error above; " + repro]
        module = target.split(":")[0]
        if not script and "Traceback" not in d["error"]:
            if "is not callable" in d["error"]:
                title = "The application is not callable"
                fixes = [f"name the WSGI callable app(environ, start_response): {module}:application, "
                         f"or a factory: {module}:create_app()"]
            elif "has no attribute" in d["error"] or "has no 'application' or 'app'" in d["error"]:
                title = "The module has no such application attribute"
                fixes = [f"name an attribute {module} defines, e.g. {module}:application"]
            elif "no module named" in d["error"]:
                title = f"The module {module} cannot be imported"
                fixes = [f"start the server in the directory that holds {module} (systemd WorkingDirectory=, "
                         "spawn-fcgi -d DIR), or install it into the interpreter (pip install -e .)"]
        r.fail(title, [where, _tail(d["error"])], fixes)
        return
    if not d.get("found"):
        r.fail("No WSGI application found",
               [where, f"{target} ran without calling run() and defines neither 'application' nor 'app'"],
               ["end the script with: from oxfcgi import run; run(application)"])
        return
    if not d.get("callable"):
        r.fail("The application is not callable",
               [where, f"got a {d.get('app_type')} object"],
               ["pass the WSGI callable app(environ, start_response), e.g. the Flask object or "
                "django.core.wsgi.get_wsgi_application()"])
        return
    how = "run() captured" if d.get("run_called") else f"'{d.get('attr', target.rpartition(':')[2])}'"
    r.ok(f"the app imports as {who} with only PATH set ({how}: a callable {d.get('app_type')})")
    if ox_missing_first and script:
        r.ok(f"oxfcgi is found through the script's own sys.path changes (not installed in {interp})")
    if d.get("prefix") != d.get("base_prefix"):
        r.note("virtualenv", [f"{interp} belongs to the virtualenv {d.get('prefix')}: that works without "
                              "activation; VIRTUAL_ENV is not needed"])


def _check_script(ctx: _Context, target: str) -> None:
    r = ctx.report
    path = os.path.abspath(target)
    ctx.script = path
    if not os.path.exists(path):
        r.fail("The script does not exist", f"{path}: no such file",
               ["check the path; the web server's SCRIPT_FILENAME / FcgidWrapper / bin-path must name it"])
        return
    if not os.path.isfile(path):
        r.fail("The target is not a regular file", _ls(path), ["give the path of the .fcgi/.py script"])
        return
    direct = ctx.python is None     # the web server executes the file itself
    lvl = FAIL if direct else WARN
    note_direct = "" if direct else " (matters only if the web server executes the file itself)"

    # -- permissions --
    parents_ok = readable = None
    try:
        b = path_blocked(path, ctx.user, "")
        parents_ok = b is None
    except Unknown as e:
        r.skip(f"whether {ctx.user.name} can reach {path}", f"{ctx.me.name} cannot stat {e.args[0]}")
    if parents_ok is False:
        _report_parent_blocked(ctx, path, b, "script")
    elif parents_ok:
        r.ok(f"every directory above the script is traversable by {ctx.user.name}")
        st = os.stat(path)
        readable = allowed(st, ctx.user, "r")
        if not readable:
            r.fail(f"The script is not readable by {ctx.user.name}",
                   [_ls(path, st), f"{ctx.user.name} cannot read it, so the interpreter cannot load it "
                                   "(Apache: \"Permission denied\", \"End of script output before headers\")"],
                   [f"chmod 755 {shlex.quote(path)}" if direct else f"chmod 644 {shlex.quote(path)}"])
        else:
            r.ok(f"the script is readable by {ctx.user.name}")
        if not allowed(st, ctx.user, "x"):
            r.add(lvl, f"The script has no exec bit for {ctx.user.name}" + note_direct,
                  [_ls(path, st), f"{ctx.user.name} cannot execute it (fcgiwrap: \"Cannot get script name, "
                                  "... is the script executable?\"; mod_fcgid: \"can't run\" / 500)"],
                  [f"chmod 755 {shlex.quote(path)}"])
        else:
            r.ok(f"the script is executable by {ctx.user.name}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            r.warn("The script is writable by its group or others",
                   [_ls(path, st), "suEXEC refuses to run it (\"file is writable by others\"), and anyone in "
                                   "that class can change the code the server runs"],
                   [f"chmod go-w {shlex.quote(path)}"])
        try:
            if os.statvfs(path).f_flag & os.ST_NOEXEC:
                r.add(lvl, "The script's filesystem is mounted noexec" + note_direct,
                      [f"{path} is on a noexec mount: exec() fails with EACCES whatever the mode"],
                      ["move the app to a filesystem mounted without noexec, or run it through an "
                       "interpreter (FcgidWrapper /path/to/python)"])
        except OSError:
            pass

    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as e:
        r.skip("the script's contents", f"{ctx.me.name} cannot read {path}: {e.strerror}")
        return

    # -- #! line --
    first = head.split(b"\n", 1)[0]
    interp = None
    bom = head.startswith(b"\xef\xbb\xbf")
    if bom:
        r.add(lvl, "The script starts with a UTF-8 byte order mark" + note_direct,
              [f"{path} begins with EF BB BF before '#!': the kernel does not see a #! line "
               "(fcgiwrap: \"Cannot execute script\"; Exec format error)"],
              [f"sed -i '1s/^\\xEF\\xBB\\xBF//' {shlex.quote(path)}"])
        first = first[3:]
    crlf_lines = head.count(b"\r\n")
    if first.endswith(b"\r"):
        shown = first.decode("utf-8", "replace").replace("\r", "\\r")
        r.add(lvl, "The script has CRLF (Windows) line endings" + note_direct,
              [f"line 1 is '{shown}': the kernel looks for an interpreter named with a trailing \\r",
               f"({crlf_lines} line{'s' if crlf_lines != 1 else ''} end in \\r\\n; fcgiwrap: \"Cannot execute script\", "
               "shell: \"bad interpreter: No such file or directory\")"],
              [f"sed -i 's/\\r$//' {shlex.quote(path)}", "(or: dos2unix " + shlex.quote(path) + ")"])
        first = first.rstrip(b"\r")
    elif crlf_lines:
        r.note("line endings", [f"{crlf_lines} line(s) end in \\r\\n but not the #! line; Python accepts that"])
    if not first.startswith(b"#!"):
        suggestion = _suggest_interp(ctx)
        r.add(lvl, "The script has no #! line" + note_direct,
              [f"line 1 of {path} is {first[:60].decode('utf-8', 'replace')!r}: exec() fails with "
               "'Exec format error' (fcgiwrap: \"Cannot execute script\")"],
              [f"sed -i '1i #!{suggestion}' {shlex.quote(path)}"])
    else:
        interp, arg = _parse_shebang(first)
        if not interp:
            r.add(lvl, "The #! line names no interpreter" + note_direct, [f"line 1: {first!r}"],
                  [_replace_shebang_cmd(path, _suggest_interp(ctx))])
        elif not interp.startswith("/"):
            r.add(lvl, "The #! interpreter is a relative path" + note_direct,
                  [f"#!{interp}: resolved against the working directory, not PATH"],
                  [_replace_shebang_cmd(path, _suggest_interp(ctx))])
            interp = None
        elif not direct:
            r.note("#! line", [f"#!{interp}{' ' + arg if arg else ''} is not used: you said the interpreter is {ctx.python}"])
            interp = None
        else:
            if os.path.basename(interp) == "env":
                if not _check_interpreter_access(ctx, interp, "the #! line"):
                    interp = None
                else:
                    prog = _env_program(arg)
                    if prog is None:
                        r.fail("#!/usr/bin/env names no program", [f"line 1: {first.decode('utf-8', 'replace')}"],
                               [_replace_shebang_cmd(path, _suggest_interp(ctx))])
                        interp = None
                    else:
                        found, skipped = _which(prog, MOD_FCGID_PATH, ctx.user)
                        mine = shutil.which(prog, path=ctx.env.get("PATH", ""))
                        if found is None:
                            saw = [f"#!{interp} {arg}: env searches PATH={MOD_FCGID_PATH} (what mod_fcgid "
                                   f"gives) and finds no {prog}"
                                   + (f" that {ctx.user.name} can execute ({', '.join(skipped)})" if skipped else "")]
                            if mine:
                                saw.append(f"your shell finds {mine} through PATH entries the web server does not have")
                            fix_interp = mine if mine and _is_python(mine) else _suggest_interp(ctx)
                            r.fail(f"#!/usr/bin/env {prog} finds no interpreter under the web server", saw,
                                   [_replace_shebang_cmd(path, fix_interp)])
                            interp = None
                        else:
                            r.ok(f"#!{interp} {arg} -> {found} on mod_fcgid's PATH")
                            ctx.env_diff = (prog, found, mine)
                            interp = found
            elif not _check_interpreter_access(ctx, interp, "the #! line"):
                interp = None
            if interp and not _is_python(interp):
                r.note("#! line", [f"the script runs {interp}, not Python (a wrapper?); check the Python "
                                   f"script it starts: oxfcgi check --python /path/to/python /path/to/app.fcgi"])
                ctx.not_python = True
                interp = None

    # -- run() --
    ctx.calls_run = _static_run_call(head)

    # -- import, as USER, with mod_fcgid's environment --
    run_interp = ctx.python if ctx.python else interp
    if ctx.not_python:
        r.skip("the app import", ["the #! line does not run Python"])
        return
    fallback = False
    if run_interp is None:
        run_interp, fallback = sys.executable, True
        try:
            if path_blocked(run_interp, ctx.user, "x") is not None:
                r.skip("the app import", [f"no usable interpreter: the #! line is broken and "
                                          f"{ctx.user.name} cannot run {run_interp}"])
                return
        except (Unknown, OSError):
            pass
    if parents_ok is False or readable is False:
        r.skip("the app import", [f"{ctx.user.name} cannot read the script; fix the permissions first"])
        return
    cwd = os.path.dirname(path)
    if not ctx.can_act_as_user:
        r.skip(f"the import as {ctx.user.name}", [f"needs root to switch user; it ran as {ctx.me.name}"])
    res = _probe(run_interp, "script", path, cwd, ctx.minimal_env(), ctx)
    if fallback:
        r.note("interpreter", [f"the #! line is unusable, so the import was checked with {run_interp}"])
    _check_env_python(ctx, path, run_interp, res)
    if ctx.env_python_reported:
        run_interp = ctx.env_diff[2]
        res = _probe(run_interp, "script", path, cwd, ctx.minimal_env(), ctx)
        r.note("interpreter", [f"the import was checked with {run_interp}, the python the fix puts in the #! line"])
    _report_import(ctx, res, run_interp, path, path, cwd)
    _report_run(ctx, res, path)


def _check_env_python(ctx: _Context, script: str, interp: str, res: ProbeResult) -> None:
    """#!/usr/bin/env python3 picks a different python in the shell (an activated venv)."""
    diff = ctx.env_diff
    if not diff or not res.ran:
        return
    prog, found, mine = diff
    if not mine or os.path.realpath(mine) == os.path.realpath(found):
        return
    venv = ctx.env.get("VIRTUAL_ENV") or ctx.env.get("CONDA_PREFIX")
    if "oxfcgi" in res.data:
        return
    res2 = _probe(mine, "interp", "-", os.path.dirname(script), ctx.minimal_env(), ctx)
    if res2.ran and "oxfcgi" in res2.data:
        saw = [f"in your shell `{prog}` is {mine}" + (f" (VIRTUAL_ENV={venv}, activated)" if venv else "")
               + ", which has oxfcgi",
               f"the web server's PATH={MOD_FCGID_PATH} gives {found}, which does not",
               "activation only changes PATH in your shell; mod_fcgid and suEXEC do not see it"]
        ctx.report.fail("The #! line picks another python under the web server", saw,
                        [_replace_shebang_cmd(script, mine)])
        ctx.env_python_reported = True


def _report_run(ctx: _Context, res: ProbeResult, script: str) -> None:
    r = ctx.report
    calls_run = ctx.calls_run
    if res.ran and res.data.get("run_called"):
        r.ok("the script calls run() (it serves, instead of exiting after loading)")
        return
    if res.ran and "error" not in res.data and res.data.get("found"):
        if calls_run:
            r.ok("the script calls run() when started as the main program")
            return
        r.warn("The script never calls run()",
               [f"{script} defines '{res.data.get('attr')}' but neither run(app) nor WSGIServer(app).run() is "
                "called: started by the web server it would load and exit at once (mod_fcgid: \"End of script "
                "output before headers\"; lighttpd: \"child exited\")",
                "(fine only if it is served with `oxfcgi serve` instead)"],
               [f"end the script with: from oxfcgi import run; run({res.data.get('attr', 'application')})"])
        return
    if calls_run is False:
        r.warn("The script never calls run()",
               [f"no run(app) / WSGIServer(app).run() call in {script}: started by the web server it would "
                "load and exit at once"],
               ["end the script with: from oxfcgi import run; run(application)"])
    elif calls_run:
        r.ok("the script has a run() call")


def _check_module(ctx: _Context, target: str) -> None:
    r = ctx.report
    interp = ctx.python or sys.executable
    if not _check_interpreter_access(ctx, interp, "--python" if ctx.python else "the interpreter"):
        r.skip("the app import", [f"{ctx.user.name} cannot run {interp}"])
        return
    cwd = os.getcwd()
    try:
        b = path_blocked(cwd, ctx.user, "x")
        if b is not None:
            r.fail(f"{ctx.user.name} cannot enter the working directory {cwd}",
                   [_ls(b.path, b.st), "module targets are imported from the working directory"],
                   [_blocked_fix(b, ctx.user), "or start it from the app's directory (systemd WorkingDirectory=)"])
            return
    except (Unknown, OSError):
        pass
    if not ctx.can_act_as_user:
        r.skip(f"the import as {ctx.user.name}", [f"needs root to switch user; it ran as {ctx.me.name}"])
    res = _probe(interp, "module", target, cwd, ctx.minimal_env(), ctx)
    _report_import(ctx, res, interp, target, None, cwd)
    d = res.data
    if res.ran and d.get("prefix") != d.get("base_prefix"):
        r.note("virtualenv", [f"{interp} is the python of the venv {d.get('prefix')}: start the server with it "
                              f"({d.get('prefix')}/bin/oxfcgi serve {target}); activation is not needed"])


# --- socket -----------------------------------------------------------------------------

def _fastcgi_get_values() -> bytes:
    body = b""
    for name in (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"):
        body += bytes([len(name), 0]) + name
    return struct.pack(">BBHHBx", 1, 9, 0, len(body), 0) + body


def _connect_as(path: str, who: Account) -> int:
    """Connect to the unix socket in a forked child running as ``who``; the errno (0 = ok)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups(sorted(who.gids))
            os.setgid(who.gid)
            os.setuid(who.uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(SOCKET_TIMEOUT)
            s.connect(path)
            s.close()
        except OSError as e:
            code = e.errno or 255
        except BaseException:
            code = 255
        os._exit(code & 0xFF)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _socket_perm_fix(ctx: _Context, path: str, st: os.stat_result) -> list[str]:
    user, group = ctx.user.name, _group_name(ctx.user.gid)
    try:
        from oxfcgi import DEFAULTS
        has_group = "socket_group" in DEFAULTS
    except Exception:
        has_group = False
    fixes = []
    if has_group:
        fixes.append(f"start the app with --socket-mode 0660 --socket-group {group} "
                     f"(the group of the nginx/Apache user {user})")
    else:
        fixes.append(f"start the app with --socket-mode 660 and run it with group {group} "
                     f"(systemd: Group={group}; spawn-fcgi: -G {group}) so {user} can write the socket")
        fixes.append(f"or add {user} to the socket's group: usermod -aG {_group_name(st.st_gid)} {user} "
                     f"and use --socket-mode 660")
    fixes.append(f"for now: chgrp {group} {shlex.quote(path)} && chmod 660 {shlex.quote(path)} "
                 "(lost when the app re-creates the socket)")
    return fixes


def _check_socket(ctx: _Context, path: str) -> None:
    r = ctx.report
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        r.fail("No socket at the --socket path",
               [f"{path}: no such file (nginx: connect() to unix:{path} failed (2: No such file or directory))"],
               [f"start the app listening there: oxfcgi serve APP --bind unix:{path}",
                f"and make the web server use the same path (nginx: fastcgi_pass unix:{path};)"])
        return
    except PermissionError:
        r.skip(f"the socket {path}", [f"{ctx.me.name} cannot stat it"])
        return
    if not stat.S_ISSOCK(st.st_mode):
        r.fail("The --socket path is not a socket", [_ls(path, st)],
               [f"remove it and let the app create the socket: rm {shlex.quote(path)} && "
                f"oxfcgi serve APP --bind unix:{path}"])
        return
    # something answers?
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(SOCKET_TIMEOUT)
    try:
        s.connect(path)
    except ConnectionRefusedError:
        r.fail("Nothing listens on the socket (a stale socket file)",
               [_ls(path, st), "connect(): Connection refused "
                               f"(nginx: connect() to unix:{path} failed (111: Connection refused), 502)"],
               [f"start the app: oxfcgi serve APP --bind unix:{path}  (it replaces a stale file)"])
        s.close()
        return
    except OSError as e:
        r.fail("Cannot connect to the socket", [_ls(path, st), f"connect(): {e.strerror or e}"],
               [f"check that the app is running and listening on {path}"])
        s.close()
        return
    answer = b""
    try:
        s.settimeout(1.0)
        s.sendall(_fastcgi_get_values())
        answer = s.recv(4096)
    except OSError:
        pass
    finally:
        s.close()
    if answer.startswith(b"HTTP/"):
        r.fail("The socket answers HTTP, not FastCGI", [f"reply: {answer[:40]!r}"],
               ["point fastcgi_pass at the FastCGI server, or use proxy_pass for an HTTP server"])
    elif len(answer) >= 8 and answer[0] == 1 and answer[1] == 10:
        r.ok(f"{path} accepts connections and answers FCGI_GET_VALUES")
    else:
        r.ok(f"{path} accepts connections")
    # can USER connect?
    try:
        b = path_blocked(path, ctx.user, "w")
    except Unknown as e:
        b = None
        r.skip(f"whether {ctx.user.name} can reach the socket", [f"{ctx.me.name} cannot stat {e.args[0]}"])
    real = None
    tried = ""
    if ctx.other_user and ctx.is_root:
        code = _connect_as(path, ctx.user)
        real = code == 0
        tried = (f"connect() as {ctx.user.name} (tried): "
                 + ("ok" if real else os.strerror(code) if 0 < code < 255 else "failed"))
    elif ctx.other_user:
        r.skip(f"connecting as {ctx.user.name}", ["needs root; judged from the modes only"])
    if b is not None and b.is_dir:
        r.fail(f"{ctx.user.name} cannot reach the socket: a directory is not traversable",
               [_ls(b.path, b.st), f"(nginx: connect() to unix:{path} failed (13: Permission denied), 502)"]
               + ([tried] if tried else []),
               [_blocked_fix(b, ctx.user)])
    elif b is not None or real is False:
        st = os.stat(path)
        r.fail(f"{ctx.user.name} cannot connect to the socket (no write permission)",
               [_ls(path, st), f"{ctx.user.describe()} needs w on the socket file "
                               f"(nginx: connect() to unix:{path} failed (13: Permission denied), 502)"]
               + ([tried] if tried else []),
               _socket_perm_fix(ctx, path, st))
    else:
        r.ok(f"{ctx.user.name} can connect to {path}" + (" (tried: connect() as it succeeded)" if real else ""))


# --- entry points -----------------------------------------------------------------------

def _is_script_target(target: str) -> bool:
    base = target
    if target.endswith((".py", ".fcgi", ".wsgi", ".cgi")) or os.sep in target:
        return True
    return os.path.isfile(base) and ":" not in target


def run_checks(target: str, user: str | None = None, socket_path: str | None = None,
               python: str | None = None, environ: dict | None = None) -> Report:
    """Run every check for ``target`` and return the :class:`Report`.

    :param target: a script path (``.fcgi``, ``.py``, any path with ``/``) or ``module:attr``.
    :param user: the account the web server runs the app as (name or uid); default the
        current user. ``KeyError`` if unknown.
    :param socket_path: a unix socket to check (exists, answers, USER can connect); default none.
    :param python: the interpreter that runs the app (FcgidWrapper, ``oxfcgi serve``); default:
        the script's ``#!`` line, or the running interpreter for ``module:attr``.
    :param environ: the shell environment to compare with mod_fcgid's; default ``os.environ``.
    """
    me = Account.lookup(os.geteuid())
    who = Account.lookup(user) if user is not None else me
    header = f"oxfcgi check {target}\n  as {who.describe()}"
    if who.uid != me.uid and os.geteuid() != 0:
        header += f"\n  (you are {me.name}, not root: some checks cannot be done as {who.name})"
    report = Report(header)
    ctx = _Context(report, who, me, python, dict(os.environ if environ is None else environ))
    if python:
        _check_interpreter_access(ctx, python, "--python")
    if _is_script_target(target):
        _check_script(ctx, target)
    else:
        _check_module(ctx, target)
    if socket_path:
        _check_socket(ctx, socket_path)
    _env_diff_note(ctx)
    return report


def add_parser(subparsers) -> None:
    """Add the ``check`` subcommand to the ``oxfcgi`` CLI (``func(args)`` returns the exit status)."""
    parser = subparsers.add_parser(
        "check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="find what would make a deployment fail (shebang, CRLF, permissions, imports, socket)",
        description="Check a .fcgi script or module:app the way the web server will run it: "
                    "as USER, with mod_fcgid's minimal environment (PATH only).",
        epilog=(
            "Examples:\n"
            "  oxfcgi check /srv/app/app.fcgi --user www-data\n"
            "  oxfcgi check myproject.wsgi:application --socket /run/oxfcgi/app.sock --user www-data\n"
            "  oxfcgi check --python /srv/venv/bin/python /srv/app/app.py   (FcgidWrapper, oxfcgi serve)\n"
            "\n"
            "Exit status: 0 when nothing would fail, 1 when something would, 2 for a usage error."
        ),
    )
    _add_arguments(parser)
    parser.set_defaults(func=_cmd)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET",
                        help="a .fcgi/.py script the web server runs, or module:app")
    parser.add_argument("--user", "-u", metavar="USER",
                        help="the user the app (or, for --socket, the web server) runs as, e.g. www-data "
                             "(default: the current user). Checking another user needs root for the "
                             "import and the socket connection")
    parser.add_argument("--socket", metavar="PATH",
                        help="a unix socket the web server connects to: check it exists, answers, "
                             "and USER may connect (default: no socket check)")
    parser.add_argument("--python", metavar="PATH",
                        help="the interpreter that runs the app instead of the #! line (FcgidWrapper, "
                             "oxfcgi serve); default: the #! line, or this interpreter for module:app")


def _cmd(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    if args.user is not None:
        try:
            Account.lookup(args.user)
        except KeyError:
            print(f"oxfcgi check: no such user {args.user!r}", file=sys.stderr)
            return 2
    python = args.python
    if python is not None:
        if "/" not in python:
            python = shutil.which(python) or python
        if not os.path.isfile(python):
            print(f"oxfcgi check: --python {args.python}: no such file", file=sys.stderr)
            return 2
        python = os.path.abspath(python)
    report = run_checks(args.target, args.user, args.socket, python)
    out.write(report.render())
    out.flush()
    return report.exit_status


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """``python -m oxfcgi.check TARGET [--user USER] [--socket PATH] [--python PATH]``.

    :param argv: the arguments (default ``sys.argv[1:]``).
    :param out: where the report goes (default ``sys.stdout``).
    :returns: 0 nothing would fail, 1 something would, 2 usage error.
    """
    parser = argparse.ArgumentParser(prog="oxfcgi check",
                                     description="Check a FastCGI deployment the way the web server runs it.")
    _add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    return _cmd(args, out)


if __name__ == "__main__":
    sys.exit(main())
