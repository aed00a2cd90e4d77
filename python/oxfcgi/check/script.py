"""Checks of a script the web server executes: permissions, the ``#!`` line, CRLF, a BOM,
noexec mounts, and whether it calls ``run()``; then its import (``imports.py``)."""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import stat
import sys

from .access import Blocked, Unknown, allowed, blocked_fix, group_name, ls, path_blocked
from .context import MOD_FCGID_PATH, Context
from .imports import check_env_python, probe, report_import, report_run
from .interpreter import check_interpreter_access, is_python, replace_shebang_cmd, suggest_interp, which
from .report import FAIL, WARN


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
                if (
                    (isinstance(v, ast.Name) and v.id in ("oxfcgi", "fcgi"))
                    or (isinstance(v, ast.Call) and "WSGIServer" in ast.dump(v.func))
                    or uses_server
                ):
                    return True
    return False


def _report_parent_blocked(ctx: Context, path: str, b: Blocked, what: str) -> None:
    """FAIL: a directory above ``path`` lacks x for USER."""
    ctx.report.fail(
        f"A parent directory of the {what} is not traversable by {ctx.user.name}",
        [
            ls(b.path, b.st),
            f"{ctx.user.name} needs x (search) on every directory above {path}",
            '(fcgiwrap: "Cannot chdir to script directory"; Apache: "Permission denied" / 403)',
        ],
        [
            blocked_fix(b, ctx.user),
            f"(or keep others out: chgrp {group_name(ctx.user.gid)} {shlex.quote(b.path)} && "
            f"chmod g+x {shlex.quote(b.path)})",
        ],
    )


def check_script(ctx: Context, target: str) -> None:
    r = ctx.report
    path = os.path.abspath(target)
    ctx.script = path
    if not os.path.exists(path):
        r.fail(
            "The script does not exist",
            f"{path}: no such file",
            ["check the path; the web server's SCRIPT_FILENAME / FcgidWrapper / bin-path must name it"],
        )
        return
    if not os.path.isfile(path):
        r.fail("The target is not a regular file", ls(path), ["give the path of the .fcgi/.py script"])
        return
    direct = ctx.python is None  # the web server executes the file itself
    lvl = FAIL if direct else WARN
    note_direct = "" if direct else " (matters only if the web server executes the file itself)"

    # -- permissions --
    parents_ok: bool | None = None
    readable: bool | None = None
    blocked: Blocked | None = None
    try:
        blocked = path_blocked(path, ctx.user, "")
        parents_ok = blocked is None
    except Unknown as e:
        r.skip(f"whether {ctx.user.name} can reach {path}", f"{ctx.me.name} cannot stat {e.args[0]}")
    if blocked is not None:
        _report_parent_blocked(ctx, path, blocked, "script")
    elif parents_ok:
        r.ok(f"every directory above the script is traversable by {ctx.user.name}")
        st = os.stat(path)
        readable = allowed(st, ctx.user, "r")
        if not readable:
            r.fail(
                f"The script is not readable by {ctx.user.name}",
                [
                    ls(path, st),
                    f"{ctx.user.name} cannot read it, so the interpreter cannot load it "
                    '(Apache: "Permission denied", "End of script output before headers")',
                ],
                [f"chmod 755 {shlex.quote(path)}" if direct else f"chmod 644 {shlex.quote(path)}"],
            )
        else:
            r.ok(f"the script is readable by {ctx.user.name}")
        if not allowed(st, ctx.user, "x"):
            r.add(
                lvl,
                f"The script has no exec bit for {ctx.user.name}" + note_direct,
                [
                    ls(path, st),
                    f'{ctx.user.name} cannot execute it (fcgiwrap: "Cannot get script name, '
                    '... is the script executable?"; mod_fcgid: "can\'t run" / 500)',
                ],
                [f"chmod 755 {shlex.quote(path)}"],
            )
        else:
            r.ok(f"the script is executable by {ctx.user.name}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            r.warn(
                "The script is writable by its group or others",
                [
                    ls(path, st),
                    'suEXEC refuses to run it ("file is writable by others"), and anyone in '
                    "that class can change the code the server runs",
                ],
                [f"chmod go-w {shlex.quote(path)}"],
            )
        try:
            if os.statvfs(path).f_flag & os.ST_NOEXEC:
                r.add(
                    lvl,
                    "The script's filesystem is mounted noexec" + note_direct,
                    [f"{path} is on a noexec mount: exec() fails with EACCES whatever the mode"],
                    [
                        "move the app to a filesystem mounted without noexec, or run it through an "
                        "interpreter (FcgidWrapper /path/to/python)"
                    ],
                )
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
        r.add(
            lvl,
            "The script starts with a UTF-8 byte order mark" + note_direct,
            [
                f"{path} begins with EF BB BF before '#!': the kernel does not see a #! line "
                '(fcgiwrap: "Cannot execute script"; Exec format error)'
            ],
            [f"sed -i '1s/^\\xEF\\xBB\\xBF//' {shlex.quote(path)}"],
        )
        first = first[3:]
    crlf_lines = head.count(b"\r\n")
    if first.endswith(b"\r"):
        shown = first.decode("utf-8", "replace").replace("\r", "\\r")
        r.add(
            lvl,
            "The script has CRLF (Windows) line endings" + note_direct,
            [
                f"line 1 is '{shown}': the kernel looks for an interpreter named with a trailing \\r",
                f'({crlf_lines} line{"s" if crlf_lines != 1 else ""} end in \\r\\n; fcgiwrap: "Cannot execute script", '
                'shell: "bad interpreter: No such file or directory")',
            ],
            [f"sed -i 's/\\r$//' {shlex.quote(path)}", "(or: dos2unix " + shlex.quote(path) + ")"],
        )
        first = first.rstrip(b"\r")
    elif crlf_lines:
        r.note("line endings", [f"{crlf_lines} line(s) end in \\r\\n but not the #! line; Python accepts that"])
    if not first.startswith(b"#!"):
        suggestion = suggest_interp(ctx)
        r.add(
            lvl,
            "The script has no #! line" + note_direct,
            [
                f"line 1 of {path} is {first[:60].decode('utf-8', 'replace')!r}: exec() fails with "
                "'Exec format error' (fcgiwrap: \"Cannot execute script\")"
            ],
            [f"sed -i '1i #!{suggestion}' {shlex.quote(path)}"],
        )
    else:
        interp, arg = _parse_shebang(first)
        if not interp:
            r.add(
                lvl,
                "The #! line names no interpreter" + note_direct,
                [f"line 1: {first!r}"],
                [replace_shebang_cmd(path, suggest_interp(ctx))],
            )
        elif not interp.startswith("/"):
            r.add(
                lvl,
                "The #! interpreter is a relative path" + note_direct,
                [f"#!{interp}: resolved against the working directory, not PATH"],
                [replace_shebang_cmd(path, suggest_interp(ctx))],
            )
            interp = None
        elif not direct:
            r.note(
                "#! line",
                [f"#!{interp}{' ' + arg if arg else ''} is not used: you said the interpreter is {ctx.python}"],
            )
            interp = None
        else:
            if os.path.basename(interp) == "env":
                if not check_interpreter_access(ctx, interp, "the #! line"):
                    interp = None
                else:
                    prog = _env_program(arg)
                    if prog is None:
                        r.fail(
                            "#!/usr/bin/env names no program",
                            [f"line 1: {first.decode('utf-8', 'replace')}"],
                            [replace_shebang_cmd(path, suggest_interp(ctx))],
                        )
                        interp = None
                    else:
                        found, skipped = which(prog, MOD_FCGID_PATH, ctx.user)
                        mine = shutil.which(prog, path=ctx.env.get("PATH", ""))
                        if found is None:
                            saw = [
                                f"#!{interp} {arg}: env searches PATH={MOD_FCGID_PATH} (what mod_fcgid "
                                f"gives) and finds no {prog}"
                                + (f" that {ctx.user.name} can execute ({', '.join(skipped)})" if skipped else "")
                            ]
                            if mine:
                                saw.append(f"your shell finds {mine} through PATH entries the web server does not have")
                            fix_interp = mine if mine and is_python(mine) else suggest_interp(ctx)
                            r.fail(
                                f"#!/usr/bin/env {prog} finds no interpreter under the web server",
                                saw,
                                [replace_shebang_cmd(path, fix_interp)],
                            )
                            interp = None
                        else:
                            r.ok(f"#!{interp} {arg} -> {found} on mod_fcgid's PATH")
                            ctx.env_diff = (prog, found, mine)
                            interp = found
            elif not check_interpreter_access(ctx, interp, "the #! line"):
                interp = None
            if interp and not is_python(interp):
                r.note(
                    "#! line",
                    [
                        f"the script runs {interp}, not Python (a wrapper?); check the Python "
                        f"script it starts: oxfcgi check --python /path/to/python /path/to/app.fcgi"
                    ],
                )
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
                r.skip(
                    "the app import",
                    [f"no usable interpreter: the #! line is broken and {ctx.user.name} cannot run {run_interp}"],
                )
                return
        except (Unknown, OSError):
            pass
    if parents_ok is False or readable is False:
        r.skip("the app import", [f"{ctx.user.name} cannot read the script; fix the permissions first"])
        return
    cwd = os.path.dirname(path)
    if not ctx.can_act_as_user:
        r.skip(f"the import as {ctx.user.name}", [f"needs root to switch user; it ran as {ctx.me.name}"])
    res = probe(run_interp, "script", path, cwd, ctx.minimal_env(), ctx)
    if fallback:
        r.note("interpreter", [f"the #! line is unusable, so the import was checked with {run_interp}"])
    check_env_python(ctx, path, run_interp, res)
    if ctx.env_python_reported and ctx.env_diff is not None and ctx.env_diff[2] is not None:
        run_interp = ctx.env_diff[2]
        res = probe(run_interp, "script", path, cwd, ctx.minimal_env(), ctx)
        r.note("interpreter", [f"the import was checked with {run_interp}, the python the fix puts in the #! line"])
    report_import(ctx, res, run_interp, path, path, cwd)
    report_run(ctx, res, path)
