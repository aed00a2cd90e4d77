"""What every check of one ``oxfcgi check`` run shares: the report, the accounts, the
interpreter, the shell environment and what earlier checks found; and the environment
the web server gives the app."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .access import Account
from .report import Report

#: The PATH a process spawned by mod_fcgid gets on Debian (httpd's own PATH); nothing else
#: from the shell reaches it (deployment notes §1.1).
MOD_FCGID_PATH = "/usr/local/bin:/usr/bin:/bin"

#: Variables a shell often has that mod_fcgid (and suEXEC) do not pass to the app.
SHELL_ONLY_VARS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "PYTHONUSERBASE",
)


@dataclass
class Context:
    report: Report
    user: Account
    me: Account
    python: str | None
    env: dict[str, str]  # the current process environment
    script: str | None = None  # absolute path of a script target
    env_diff: tuple[str, str, str | None] | None = None  # (prog, found on mod_fcgid's PATH, found on yours)
    not_python: bool = False  # the #! line runs something else (a wrapper)
    calls_run: bool | None = None  # _static_run_call() of the script
    env_python_reported: bool = False  # "the #! line picks another python" was said

    @property
    def is_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def other_user(self) -> bool:
        return self.user.uid != self.me.uid

    @property
    def can_act_as_user(self) -> bool:
        return not self.other_user or self.is_root

    def minimal_env(self) -> dict[str, str]:
        return {"PATH": MOD_FCGID_PATH}


def env_diff_note(ctx: Context) -> None:
    present = [f"{k}={ctx.env[k]}" for k in SHELL_ONLY_VARS if ctx.env.get(k)]
    saw = [
        f"mod_fcgid passes only PATH={MOD_FCGID_PATH} (plus FcgidInitialEnv; suEXEC strips those "
        "and resets PATH); the import check runs with that environment"
    ]
    if present:
        saw.append("your shell also has, and the web server will not pass: " + ", ".join(present))
    extra_path = [
        p for p in ctx.env.get("PATH", "").split(os.pathsep) if p and p not in MOD_FCGID_PATH.split(os.pathsep)
    ]
    if extra_path:
        saw.append("your PATH also has: " + os.pathsep.join(dict.fromkeys(extra_path)))
    ctx.report.note("environment", saw)
