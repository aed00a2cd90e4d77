"""Apache 2.4 configurations: ``oxfcgi config apache-fcgid`` and ``oxfcgi config apache-proxy``.

``apache-fcgid``
    mod_fcgid starts the app itself (it hands the process its listening socket
    as fd 0, which ``oxfcgi.run(app)`` picks up). Two shapes:

    - ``--app /srv/app/app.fcgi`` (an executable script you wrote):
      ``Alias PREFIX file`` + ``AddHandler fcgid-script .fcgi`` + ``Options +ExecCGI``.
      The script's shebang and exec bit must be right.
    - ``--app module:attr`` (or ``--app file.py``): a launcher ``<workdir>/<module>.fcgi``
      (its text is printed too, as a commented block) run through
      ``FcgidWrapper "PYTHON LAUNCHER"``, so neither the exec bit nor the shebang
      can break it, and the interpreter is the one given by ``--python``.

    Both send ``Authorization`` (``FcgidPassHeader``) and mount the app at
    ``--prefix`` with a correct SCRIPT_NAME/PATH_INFO split.

``apache-proxy``
    mod_proxy_fcgi in front of a standalone ``oxfcgi serve`` on ``--socket``
    (unix path or host:port), with pooled connections (``enablereuse=on``),
    ``ProxyFCGIBackendType GENERIC``, ``CGIPassAuth On`` and
    ``ProxyFCGISetEnvIf`` rules that turn mod_proxy_fcgi's "SCRIPT_NAME = the
    whole path, no PATH_INFO" into SCRIPT_NAME = prefix, PATH_INFO = the rest.

The output of both is valid Apache configuration as a whole (the launcher text
is commented out), meant for a ``<VirtualHost>`` or the server config. The
integration tests (tests/test_apache.py) run Debian's Apache with exactly this
text.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from oxfcgi.config import human_size

if TYPE_CHECKING:
    from oxfcgi.config import ConfigOptions

__all__ = [
    "LAUNCHER_BEGIN",
    "LAUNCHER_END",
    "extract_launcher",
    "generate",
    "launcher_path",
    "launcher_text",
    "parse_app",
    "serve_args",
]

#: Marker lines around the commented launcher in the ``apache-fcgid`` output.
LAUNCHER_BEGIN = "# ----- BEGIN launcher"
LAUNCHER_END = "# ----- END launcher"


def _norm_prefix(prefix: str) -> str:
    prefix = (prefix or "/").strip()
    stripped = prefix.strip("/")
    return "/" + stripped if stripped else "/"


def _quote(value: str) -> str:
    """An Apache directive argument in double quotes."""
    if '"' in value or "\n" in value:
        raise ValueError(f"cannot put {value!r} into an Apache configuration")
    return f'"{value}"'


def parse_app(app: str) -> tuple[str, str | None, str | None]:
    """Split ``options.app`` into ``(kind, module, attr)``.

    ``kind`` is ``"fcgi"`` for an executable ``.fcgi`` script (module and attr
    are None), ``"py"`` for a ``.py`` file (module = its stem, attr None = the
    loader's rule: ``application``, else ``app``) or ``"module"`` for
    ``module[:attr]``.
    """
    app = app.strip()
    if app.endswith(".fcgi"):
        return "fcgi", None, None
    if app.endswith(".py") or "/" in app:
        stem = os.path.splitext(os.path.basename(app))[0]
        return "py", stem, None
    module, _, attr = app.partition(":")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module):
        raise ValueError(f"--app {app!r} is neither module:attr nor a path to a .fcgi/.py file")
    return "module", module, attr or None


def _workdir(options: ConfigOptions) -> str:
    kind, _, _ = parse_app(options.app)
    if options.workdir:
        return os.path.abspath(options.workdir)
    if kind in ("fcgi", "py"):
        return os.path.dirname(os.path.abspath(options.app))
    return os.getcwd()


def launcher_path(options: ConfigOptions) -> str:
    """Where the ``apache-fcgid`` launcher goes: ``<workdir>/<module>.fcgi``
    (for a ``.fcgi`` app: the app itself)."""
    kind, module, _ = parse_app(options.app)
    if kind == "fcgi" or module is None:
        return os.path.abspath(options.app)
    if options.launcher:
        return os.path.abspath(options.launcher)
    return os.path.join(_workdir(options), f"{module.rpartition('.')[2]}.fcgi")


def launcher_text(options: ConfigOptions) -> str:
    """The ``.fcgi`` launcher for a ``module:attr`` (or ``.py``) app.

    The first line is ``#!`` + ``options.python``; it puts the workdir first on
    ``sys.path`` explicitly (mod_fcgid passes no PYTHONPATH, and suEXEC would
    strip it), changes into it, imports the app and calls ``oxfcgi.run(app)``,
    which serves on the socket mod_fcgid passes as fd 0.
    """
    kind, module, attr = parse_app(options.app)
    if kind == "fcgi":
        raise ValueError(f"{options.app} is already a .fcgi script; no launcher needed")
    workdir = _workdir(options)
    if attr is not None and attr.isidentifier():
        load = f"from {module} import {attr} as app  # noqa: E402\n"
    elif attr is None:
        load = (
            f"_module = importlib.import_module({module!r})\n"
            'app = getattr(_module, "application", None) or getattr(_module, "app")\n'
        )
    else:
        call = attr.endswith("()")
        name = attr[:-2] if call else attr
        load = (
            f"app = importlib.import_module({module!r})\n"
            f'for _name in {name!r}.split("."):\n'
            "    app = getattr(app, _name)\n"
        )
        if call:
            load += "app = app()\n"
    return (
        f"#!{options.python}\n"
        f"# FastCGI launcher for {options.app}, generated by `oxfcgi config apache-fcgid`.\n"
        "# mod_fcgid starts it with the listening socket as fd 0; oxfcgi.run() serves on it.\n"
        + ("import importlib\n" if "importlib" in load else "")
        + "import os\n"
        "import sys\n"
        "\n"
        f"APP_DIR = {workdir!r}\n"
        "sys.path.insert(0, APP_DIR)\n"
        "os.chdir(APP_DIR)\n"
        "\n"
        "from oxfcgi import run  # noqa: E402\n"
        "\n"
        f"{load}"
        "\n"
        'if __name__ == "__main__":\n'
        "    run(app)\n"
    )


#: mod_fcgid's FcgidMaxRequestLen takes no "unlimited": this is as large as it takes.
_FCGID_NO_LIMIT = 2147483647
#: Apache's LimitRequestBody default since 2.4.53.
APACHE_BODY_DEFAULT = 1 << 30


def _fcgid_limits(options: ConfigOptions) -> str:
    """Authorization, the body limit and the timeouts, in server config / virtual host context."""
    body = options.max_body_size
    fcgid_len = body if body else _FCGID_NO_LIMIT
    # Apache's own LimitRequestBody (1 GiB by default) is raised only when the limit is above
    # it: when it refuses a body, mod_fcgid still sends the request, with an empty body.
    core = f"LimitRequestBody {0 if body == 0 else body}\n" if body == 0 or body > APACHE_BODY_DEFAULT else ""
    return f"""\
# Authorization is not passed to FastCGI apps unless asked for (HTTP_AUTHORIZATION).
FcgidPassHeader Authorization
# Request bodies up to {human_size(body)} (`oxfcgi config --max-body-size`; 0 = no limit). mod_fcgid's
# default FcgidMaxRequestLen is 128 KiB: larger uploads get a 500 ("HTTP request length ...
# exceeds MaxRequestLen"). mod_fcgid spools the whole body before the app sees it.
FcgidMaxRequestLen {fcgid_len}
{core}# Long requests (`oxfcgi config --timeout`): the app may take {options.timeout} s to start answering and
# between its bytes (FcgidIOTimeout, default 40 s: "read data timeout"), and a request may run
# that long before mod_fcgid kills its process (FcgidBusyTimeout, default 300 s).
FcgidIOTimeout {options.timeout}
FcgidBusyTimeout {options.timeout + 30}
# - FcgidMaxRequestsPerProcess 0: recycle a process after N requests. Prefer this
#   over any self-exit in the app (which makes mod_fcgid answer 500 for the request
#   it already queued); oxfcgi never exits by itself under mod_fcgid.
#FcgidMaxRequestsPerProcess 10000
# mod_fcgid sends one request at a time to each process and starts more processes
# (up to FcgidMaxProcessesPerClass, default 100) under load.
"""


def _fcgid_mount(prefix: str, target: str) -> str:
    """``Alias`` of ``prefix`` onto the script file ``target`` (PATH_INFO = the rest)."""
    if prefix == "/":
        # "/x" maps to "target/x": SCRIPT_NAME "" and PATH_INFO "/x".
        return f"Alias / {_quote(target + '/')}\n"
    return f"Alias {_quote(prefix)} {_quote(target)}\n"


def _generate_fcgid(options: ConfigOptions) -> str:
    prefix = _norm_prefix(options.prefix)
    kind, _, _ = parse_app(options.app)
    script = launcher_path(options)
    directory, name = os.path.split(script)
    out = [
        f"# Apache 2.4 + mod_fcgid: {options.app} at {prefix}",
        "# Generated by `oxfcgi config apache-fcgid`. Needs mod_fcgid and mod_alias",
        "# (Debian: apt-get install libapache2-mod-fcgid; a2enmod fcgid alias).",
        f"# The processes run as Apache's User (www-data on Debian): {directory} and the",
        "# app's files must be readable by it, and its interpreter must be able to import oxfcgi.",
    ]
    if kind == "fcgi":
        out += [
            f"# {script} must be executable (chmod 755), start with a #! line naming a Python",
            "# that has oxfcgi, use LF line endings, and call oxfcgi.run(app).",
        ]
    else:
        out += [
            (
                f"# The launcher {script} (written by --launcher): FcgidWrapper"
                if options.launcher
                else f"# Save the launcher printed below as {script} (LF line endings), or let"
                " `oxfcgi config --launcher PATH` write it. FcgidWrapper"
            ),
            f"# runs it with {options.python}, so neither its exec bit nor its #! line matters.",
        ]
    out.append("")
    text = "\n".join(out) + "\n" + _fcgid_limits(options) + "\n"
    text += _fcgid_mount(prefix, script)
    text += f"<Directory {_quote(directory)}>\n"
    text += "    Require all granted\n"
    if kind == "fcgi":
        text += (
            "    Options +ExecCGI\n"
            "    AddHandler fcgid-script .fcgi\n"
            f"    <Files {_quote(name)}>\n"
            "        AcceptPathInfo On\n"
            "    </Files>\n"
        )
    else:
        wrapper = f"{options.python} {script}"
        if any(c.isspace() for c in options.python) or any(c.isspace() for c in script):
            raise ValueError("FcgidWrapper cannot take paths with spaces; move the app or the interpreter")
        text += (
            f"    <Files {_quote(name)}>\n"
            "        SetHandler fcgid-script\n"
            "        Options +ExecCGI\n"
            "        AcceptPathInfo On\n"
            f"        FcgidWrapper {_quote(wrapper)}\n"
            "    </Files>\n"
        )
    text += "</Directory>\n"
    if kind != "fcgi" and options.launcher:
        text += f"# The launcher was written to {script} (oxfcgi config --launcher).\n"
    elif kind != "fcgi":
        body = launcher_text(options)
        text += (
            "\n"
            f"{LAUNCHER_BEGIN}: save as {script} without the leading '# ' -----\n"
            + "".join(("# " + line).rstrip() + "\n" for line in body.splitlines())
            + f"{LAUNCHER_END} -----\n"
        )
    return text


def extract_launcher(config_text: str) -> str:
    """The launcher text from an ``apache-fcgid`` output (the commented block, un-commented)."""
    lines = config_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(LAUNCHER_BEGIN))
        end = next(i for i, line in enumerate(lines) if line.startswith(LAUNCHER_END))
    except StopIteration:
        raise ValueError("no launcher block in this configuration") from None
    body = []
    for line in lines[start + 1 : end]:
        body.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(body) + "\n"


def _socket_target(socket: str) -> tuple[str, str]:
    """(ProxyPass URL, description) for ``options.socket``."""
    socket = socket.strip()
    socket = socket.removeprefix("unix:")
    if socket.startswith("/"):
        if "|" in socket or any(c.isspace() for c in socket):
            raise ValueError(f"unix socket path {socket!r} cannot contain '|' or spaces in a ProxyPass URL")
        return f"unix:{socket}|fcgi://localhost", f"unix:{socket}"
    host, sep, port = socket.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--socket {socket!r} is neither a unix socket path nor host:port")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"fcgi://{host}:{port}", f"{host}:{port}"


def _pcre_escape(text: str) -> str:
    return "".join(c if c.isalnum() or c in "/_-" else "\\" + c for c in text)


def serve_args(options: ConfigOptions) -> list[str]:
    """The ``oxfcgi serve`` arguments (after ``python -m oxfcgi serve``) that match the
    ``apache-proxy`` configuration: the app, ``--bind``, for a unix socket
    ``--socket-mode 660 --socket-group www-data`` (Debian's Apache user), and
    ``--script-name PREFIX`` for a prefix other than ``/``."""
    kind, _, _ = parse_app(options.app)
    app = os.path.abspath(options.app) if kind in ("fcgi", "py") else options.app
    _, bind = _socket_target(options.socket)
    args = [app, "--bind", bind]
    if bind.startswith("unix:"):
        args += ["--socket-mode", "660", "--socket-group", "www-data"]  # Debian's Apache group (RHEL: apache)
    # Started as root: bind, then serve as this user (as the nginx generator does).
    args += ["--user", options.user or "www-data"]
    if options.group:
        args += ["--group", options.group]
    prefix = _norm_prefix(options.prefix)
    if prefix != "/":
        args += ["--script-name", prefix]
    return args


def _generate_proxy(options: ConfigOptions) -> str:
    prefix = _norm_prefix(options.prefix)
    backend, bind = _socket_target(options.socket)
    serve = " ".join([options.python, "-m", "oxfcgi", "serve", *serve_args(options)])
    lines = [
        f"# Apache 2.4 + mod_proxy_fcgi -> oxfcgi on {bind}, mounted at {prefix}",
        "# Generated by `oxfcgi config apache-proxy`. Needs mod_proxy, mod_proxy_fcgi (Apache >= 2.4.26)",
        "# (Debian: a2enmod proxy_fcgi).",
        "# Apache does not start the app; run it separately (systemd: `oxfcgi config systemd`), as:",
        f"#   {serve}",
    ]
    if bind.startswith("unix:"):
        lines.append("# Apache's User (www-data on Debian) must be able to connect: the socket's directory must be")
        lines.append("# searchable by it and the socket writable by it (here: group www-data, mode 660).")
    lines += [
        "# enablereuse=on keeps FastCGI connections open between requests (FCGI_KEEP_CONN); idle",
        "# pooled connections hold no oxfcgi thread, so they cannot starve it.",
        "",
    ]
    text = "\n".join(lines) + "\n"
    timeout = options.timeout
    text += (
        f"# timeout={timeout}: Apache waits {timeout} s for the app's answer and between its bytes\n"
        "# (`oxfcgi config --timeout`; the default, ProxyTimeout or Timeout 60 s, ends in a 504).\n"
    )
    if prefix == "/":
        text += f'ProxyPass "/" "{backend}/" enablereuse=on timeout={timeout}\n'
        text += '<Location "/">\n'
    else:
        text += f'ProxyPass {_quote(prefix)} "{backend}{prefix}" enablereuse=on timeout={timeout}\n'
        text += f"<Location {_quote(prefix)}>\n"
    text += (
        f"    # Request bodies up to {human_size(options.max_body_size)} (`oxfcgi config --max-body-size`;\n"
        "    # 0 = no limit); Apache's own default is 1 GiB.\n"
        f"    LimitRequestBody {options.max_body_size}\n"
    )
    text += (
        "    # Plain FastCGI, not PHP-FPM's SCRIPT_FILENAME conventions.\n"
        "    ProxyFCGIBackendType GENERIC\n"
        "    # Send the Authorization header as HTTP_AUTHORIZATION.\n"
        "    CGIPassAuth On\n"
        "    # mod_proxy_fcgi sends SCRIPT_NAME = the whole path and no PATH_INFO; split it\n"
        "    # so the app sees SCRIPT_NAME = the mount point and PATH_INFO = the rest.\n"
    )
    if prefix == "/":
        text += (
            '    ProxyFCGISetEnvIf "true" PATH_INFO "%{reqenv:SCRIPT_NAME}"\n'
            '    ProxyFCGISetEnvIf "true" SCRIPT_NAME ""\n'
        )
    else:
        rx = _pcre_escape(prefix)
        text += (
            f'    ProxyFCGISetEnvIf "reqenv(\'SCRIPT_NAME\') =~ m#^{rx}(/.*)#" PATH_INFO "$1"\n'
            f'    ProxyFCGISetEnvIf "reqenv(\'SCRIPT_NAME\') =~ m#^{rx}$#" PATH_INFO ""\n'
            f'    ProxyFCGISetEnvIf "true" SCRIPT_NAME {_quote(prefix)}\n'
        )
    text += "</Location>\n"
    return text


def generate(options: ConfigOptions) -> str:
    """The ``apache-fcgid`` or ``apache-proxy`` configuration for ``options``."""
    if options.target == "apache-fcgid":
        return _generate_fcgid(options)
    if options.target == "apache-proxy":
        return _generate_proxy(options)
    raise ValueError(f"the apache module does not generate {options.target!r}")
