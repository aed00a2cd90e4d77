"""The application's import, tried in the target interpreter as USER with the web
server's environment (the probe, ``probe.py``), and what its result means."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from .access import Unknown, path_blocked
from .context import MOD_FCGID_PATH, Context
from .interpreter import replace_shebang_cmd, suggest_interp
from .probe import MARK

#: Seconds the application may take to import before the check gives up on it.
IMPORT_TIMEOUT = 30.0


@dataclass
class ProbeResult:
    """What the probe saw; ``launch_error`` is set when the interpreter could not even start."""

    data: dict[str, Any]
    returncode: int | None
    stdout: str
    stderr: str
    launch_error: str | None = None
    timed_out: bool = False
    as_user: bool = True

    @property
    def ran(self) -> bool:
        return self.launch_error is None and not self.timed_out and bool(self.data)


def _probe_path(ctx: Context, stack: contextlib.ExitStack) -> str:
    """The probe file, as USER can read it: the installed ``probe.py``, or a copy in a
    private temporary directory when USER cannot reach the installation (a venv under
    /root, say). The copy is removed when ``stack`` closes."""
    installed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py")
    try:
        if path_blocked(installed, ctx.user, "r") is None:
            return installed
    except (Unknown, OSError):
        pass
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="oxfcgi-probe-"))
    os.chmod(directory, 0o755)
    copy = os.path.join(directory, "probe.py")
    shutil.copyfile(installed, copy)
    os.chmod(copy, 0o644)
    return copy


def probe(interp: str, mode: str, target: str, cwd: str, env: dict[str, str], ctx: Context) -> ProbeResult:
    """Run ``probe.py MODE TARGET`` with ``interp`` in ``cwd`` with exactly ``env``, as USER
    when this process may switch to it (root), and read its one JSON line."""
    as_user = True
    switch = False
    if ctx.me.uid != ctx.user.uid:
        if os.geteuid() == 0:
            switch = True
        else:
            as_user = False
    with contextlib.ExitStack() as stack:
        program = _probe_path(ctx, stack)
        try:
            proc = subprocess.run(
                [interp, program, mode, target],
                cwd=cwd,
                env=env,
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=IMPORT_TIMEOUT,
                user=ctx.user.uid if switch else None,
                group=ctx.user.gid if switch else None,
                extra_groups=sorted(ctx.user.gids) if switch else None,
            )
        except subprocess.TimeoutExpired as e:
            return ProbeResult({}, None, _text(e.stdout), _text(e.stderr), timed_out=True, as_user=as_user)
        except OSError as e:
            where = f" (working directory {cwd})" if e.filename == cwd or (e.errno == errno.EACCES and cwd) else ""
            return ProbeResult({}, None, "", "", launch_error=f"{e.strerror or e}{where}", as_user=as_user)
    out = _text(proc.stdout)
    data = {}
    idx = out.rfind(MARK)
    if idx >= 0:
        try:
            data = json.loads(out[idx + len(MARK) :].splitlines()[0])
        except (ValueError, IndexError):
            data = {}
        out = out[:idx].rstrip("\n")
    return ProbeResult(data, proc.returncode, out, _text(proc.stderr), as_user=as_user)


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def _tail(text: str, n: int = 25) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > n:
        lines = [f"... ({len(lines) - n} lines cut)"] + lines[-n:]
    return "\n".join(lines)


def _pythonpath_fix(ctx: Context, script: str | None, entries: list[str]) -> list[str]:
    joined = ":".join(entries)
    fixes = []
    if script:
        inserts = "; ".join(f"sys.path.insert(0, {e!r})" for e in entries)
        fixes.append(f"put the path in the script, before the app's imports: import sys; {inserts}")
        fixes.append("or use a venv's python that has these packages in the #! line (#!/srv/venv/bin/python3)")
        fixes.append(
            f"or (Apache, no suEXEC) FcgidInitialEnv PYTHONPATH {joined}   -- suEXEC (SuexecUserGroup) strips it"
        )
    else:
        fixes.append(
            f"set it where the app is started: systemd Environment=PYTHONPATH={joined}; "
            f"spawn-fcgi: env PYTHONPATH={joined} spawn-fcgi ...; "
            "or install the app into the interpreter (pip install -e .)"
        )
    return fixes


def report_import(ctx: Context, res: ProbeResult, interp: str, target: str, script: str | None, cwd: str) -> None:
    """Turn the probe of the application into findings (and retry with the shell's
    PYTHONPATH to explain a failure that only the environment hides)."""
    r = ctx.report
    who = ctx.user.name if res.as_user else f"{ctx.me.name} (not {ctx.user.name}: needs root)"
    where = f"as {who}, cwd {cwd}, env PATH={MOD_FCGID_PATH} only, {interp}"
    if res.launch_error:
        r.fail(
            f"{interp} could not be started to import the app",
            [where, res.launch_error],
            [f"check that {ctx.user.name} can enter {cwd} and run {interp}"],
        )
        return
    if res.timed_out:
        r.fail(
            f"Importing the app did not finish within {IMPORT_TIMEOUT:g} s",
            [
                where,
                "it may be serving something else (e.g. Flask's app.run()) or waiting on a "
                "database/network at import time",
                _tail(res.stderr, 10),
            ],
            ["make the import fast and side-effect free; serve with run(app) only"],
        )
        return
    d = res.data
    if not d:
        r.fail(
            "The app's import killed the interpreter",
            [where, f"exit status {res.returncode}", _tail(res.stderr or res.stdout)],
            [
                "run it by hand to see more: "
                + " ".join(shlex.quote(x) for x in [interp, script or "-c", "import " + target.split(":")[0]])
            ],
        )
        return
    ox_missing_first = "oxfcgi" not in d
    if d.get("exit") is not None:
        r.fail(
            "The script calls sys.exit() while loading",
            [where, f"SystemExit({d['exit']})", _tail(res.stderr, 10)],
            [
                "started by the web server it would exit at once ('End of script output before headers'); "
                "remove the exit or move it after run(app)"
            ],
        )
        return
    if "error" in d:
        missing = d.get("missing_module")
        # Would it import with the shell's PYTHONPATH? Then the environment is the cause.
        extra = {k: ctx.env[k] for k in ("PYTHONPATH", "PYTHONHOME") if ctx.env.get(k)}
        if extra and ctx.can_act_as_user:
            env2 = dict(ctx.minimal_env(), **extra)
            res2 = probe(interp, "script" if script else "module", target, cwd, env2, ctx)
            if res2.ran and "error" not in res2.data and res2.data.get("found"):
                entries = [e for e in extra.get("PYTHONPATH", "").split(":") if e]
                r.fail(
                    "The app imports only thanks to PYTHONPATH from your shell",
                    [
                        where + ": " + d["error"].strip().splitlines()[-1],
                        f"with your {', '.join(f'{k}={v}' for k, v in extra.items())} it imports; "
                        "mod_fcgid passes only PATH and FcgidInitialEnv, and suEXEC drops PYTHONPATH too",
                    ],
                    _pythonpath_fix(ctx, script, entries)
                    if entries
                    else ["do not rely on PYTHONHOME; use the interpreter of that installation in the #! line"],
                )
                return
        if missing == "oxfcgi" and ox_missing_first and ctx.env_python_reported:
            return
        if missing == "oxfcgi" and ox_missing_first:
            if d.get("externally_managed"):
                # Debian's and Ubuntu's python refuse pip (PEP 668): a venv, named in the #! line.
                venv = "/srv/venv"
                fixes = [
                    f"{interp} is the system's Python, which refuses pip install (PEP 668, "
                    "externally-managed-environment): make a virtualenv and install oxfcgi there:",
                    f"  {interp} -m venv {venv} && {venv}/bin/pip install oxfcgi",
                    "  then run the app with that venv's python"
                    + (
                        f": {replace_shebang_cmd(script, venv + '/bin/python3')}"
                        if script
                        else f": {venv}/bin/oxfcgi serve ..."
                    ),
                ]
            else:
                fixes = [f"{interp} -m pip install oxfcgi"]
            suggestion = suggest_interp(ctx)
            if script and suggestion != interp:
                fixes.append("or point the #! line at a python that has it: " + replace_shebang_cmd(script, suggestion))
                try:
                    if path_blocked(suggestion, ctx.user, "x") is not None:
                        fixes.append(
                            f"  ({ctx.user.name} cannot run {suggestion}: make a venv it can reach, "
                            "e.g. python3 -m venv /srv/venv && /srv/venv/bin/pip install oxfcgi)"
                        )
                except (Unknown, OSError):
                    pass
            r.fail(
                f"{interp} has no oxfcgi",
                [f'{interp} -c "import oxfcgi": {d.get("oxfcgi_error", "")}', f"({where})"],
                fixes,
            )
            return
        title = "The app fails to import"
        repro = (
            "to reproduce it as the web server does: "
            + (f"cd {shlex.quote(cwd)} && " if cwd else "")
            + (f"runuser -u {ctx.user.name} -- " if ctx.other_user else "")
            + f"env -i PATH={MOD_FCGID_PATH} "
            + (shlex.quote(script) if script else f"{shlex.quote(interp)} -c 'import {target.split(':')[0]}'")
        )
        fixes = ["fix the error above; " + repro]
        module = target.split(":")[0]
        if not script and "Traceback" not in d["error"]:
            if "is not callable" in d["error"]:
                title = "The application is not callable"
                fixes = [
                    f"name the WSGI callable app(environ, start_response): {module}:application, "
                    f"or a factory: {module}:create_app()"
                ]
            elif "has no attribute" in d["error"] or "has no 'application' or 'app'" in d["error"]:
                title = "The module has no such application attribute"
                fixes = [f"name an attribute {module} defines, e.g. {module}:application"]
            elif "no module named" in d["error"]:
                title = f"The module {module} cannot be imported"
                fixes = [
                    f"start the server in the directory that holds {module} (systemd WorkingDirectory=, "
                    "spawn-fcgi -d DIR), or install it into the interpreter (pip install -e .)"
                ]
        r.fail(title, [where, _tail(d["error"])], fixes)
        return
    if not d.get("found"):
        r.fail(
            "No WSGI application found",
            [where, f"{target} ran without calling run() and defines neither 'application' nor 'app'"],
            ["end the script with: from oxfcgi import run; run(application)"],
        )
        return
    if not d.get("callable"):
        r.fail(
            "The application is not callable",
            [where, f"got a {d.get('app_type')} object"],
            [
                "pass the WSGI callable app(environ, start_response), e.g. the Flask object or "
                "django.core.wsgi.get_wsgi_application()"
            ],
        )
        return
    how = "run() captured" if d.get("run_called") else f"'{d.get('attr', target.rpartition(':')[2])}'"
    r.ok(f"the app imports as {who} with only PATH set ({how}: a callable {d.get('app_type')})")
    from .apps import report_app_facts

    report_app_facts(ctx, d)
    if ox_missing_first and script:
        r.ok(f"oxfcgi is found through the script's own sys.path changes (not installed in {interp})")
    if d.get("prefix") != d.get("base_prefix"):
        r.note(
            "virtualenv",
            [
                f"{interp} belongs to the virtualenv {d.get('prefix')}: that works without "
                "activation; VIRTUAL_ENV is not needed"
            ],
        )


def check_env_python(ctx: Context, script: str, interp: str, res: ProbeResult) -> None:
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
    res2 = probe(mine, "interp", "-", os.path.dirname(script), ctx.minimal_env(), ctx)
    if res2.ran and "oxfcgi" in res2.data:
        saw = [
            f"in your shell `{prog}` is {mine}"
            + (f" (VIRTUAL_ENV={venv}, activated)" if venv else "")
            + ", which has oxfcgi",
            f"the web server's PATH={MOD_FCGID_PATH} gives {found}, which does not",
            "activation only changes PATH in your shell; mod_fcgid and suEXEC do not see it",
        ]
        ctx.report.fail(
            "The #! line picks another python under the web server", saw, [replace_shebang_cmd(script, mine)]
        )
        ctx.env_python_reported = True


def report_run(ctx: Context, res: ProbeResult, script: str) -> None:
    r = ctx.report
    calls_run = ctx.calls_run
    if res.ran and res.data.get("run_called"):
        r.ok("the script calls run() (it serves, instead of exiting after loading)")
        return
    if res.ran and "error" not in res.data and res.data.get("found"):
        if calls_run:
            r.ok("the script calls run() when started as the main program")
            return
        r.warn(
            "The script never calls run()",
            [
                f"{script} defines '{res.data.get('attr')}' but neither run(app) nor WSGIServer(app).run() is "
                'called: started by the web server it would load and exit at once (mod_fcgid: "End of script '
                'output before headers"; lighttpd: "child exited")',
                "(fine only if it is served with `oxfcgi serve` instead)",
            ],
            [f"end the script with: from oxfcgi import run; run({res.data.get('attr', 'application')})"],
        )
        return
    if calls_run is False:
        r.warn(
            "The script never calls run()",
            [
                f"no run(app) / WSGIServer(app).run() call in {script}: started by the web server it would "
                "load and exit at once"
            ],
            ["end the script with: from oxfcgi import run; run(application)"],
        )
    elif calls_run:
        r.ok("the script has a run() call")
