"""The doctor's probe: run by path, as USER, by the interpreter that will run the app.

    python3 /path/to/oxfcgi/check/probe.py MODE TARGET

- ``script``: execute TARGET as ``__main__`` the way the web server does, with
  ``oxfcgi.run()``/``WSGIServer.run()`` captured (also when oxfcgi is only found after the
  script edits ``sys.path``);
- ``module``: ``oxfcgi._loader.load_target(TARGET)``, as ``oxfcgi serve`` loads it;
- ``interp``: only report the interpreter.

The result is one JSON line after :data:`MARK` on fd 1 (the app may print anything before
it). This file imports nothing of oxfcgi at its top and uses only the standard library:
the interpreter under test may not have oxfcgi at all, and that is one of the answers.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import sysconfig
import traceback
import types
from typing import Any

MARK = "@@OXFCGI-CHECK@@"


def _clean_traceback(e: BaseException) -> str:
    """The traceback without the probe's, the loader's and importlib's own frames."""
    tb = e.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__
        or "importlib" in tb.tb_frame.f_code.co_filename
        or tb.tb_frame.f_code.co_filename.endswith("_loader.py")
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb)).rstrip()


def _arm_when_imported(blocks: list[Any]) -> None:
    """Enter a capture block as soon as ``oxfcgi._loader`` is imported (by the script, after
    it put oxfcgi's directory on sys.path)."""

    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "oxfcgi._loader":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_and_arm(module: types.ModuleType) -> None:
                    exec_module(module)
                    blocks.append(module.capture().__enter__())

                spec.loader.exec_module = exec_and_arm  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Hook())


def _run_script(target: str, out: dict[str, Any]) -> tuple[bool, Any]:
    """Execute the script as the web server would; (found, app)."""
    sys.argv = [target]
    sys.path[0] = os.path.dirname(target)
    module = types.ModuleType("__main__")
    module.__file__ = target
    module.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    with open(target, "rb") as f:
        code = compile(f.read(), target, "exec")
    exec(code, module.__dict__)
    for attr in ("application", "app"):
        if attr in module.__dict__:
            out["attr"] = attr
            return True, module.__dict__[attr]
    return False, None


def _django_paths() -> list[dict[str, Any]]:
    """Files and directories a loaded Django project writes at run time, from its settings:
    SQLite databases, MEDIA_ROOT, log files of LOGGING; and STATIC_ROOT (read only)."""
    conf = sys.modules.get("django.conf")
    settings = getattr(conf, "settings", None)
    if settings is None or not getattr(settings, "configured", False):
        return []
    paths: list[dict[str, Any]] = []
    for alias, db in (getattr(settings, "DATABASES", None) or {}).items():
        if "sqlite3" in str(db.get("ENGINE", "")) and str(db.get("NAME", "")) not in ("", ":memory:"):
            paths.append(
                {"what": f"DATABASES[{alias!r}] (SQLite)", "path": os.path.abspath(str(db["NAME"])), "kind": "sqlite"}
            )
    media = getattr(settings, "MEDIA_ROOT", "")
    if media:
        paths.append({"what": "MEDIA_ROOT (uploads)", "path": os.path.abspath(str(media)), "kind": "dir"})
    for name, handler in ((getattr(settings, "LOGGING", None) or {}).get("handlers") or {}).items():
        if isinstance(handler, dict) and handler.get("filename"):
            paths.append(
                {"what": f"LOGGING handler {name!r}", "path": os.path.abspath(str(handler["filename"])), "kind": "file"}
            )
    static = getattr(settings, "STATIC_ROOT", "")
    if static:
        paths.append({"what": "STATIC_ROOT", "path": os.path.abspath(str(static)), "kind": "read"})
    return paths


def _app_facts(out: dict[str, Any], loaded_options: dict[str, Any]) -> None:
    """What the doctor checks about a loaded app beyond its import."""
    try:
        out["writable_paths"] = _django_paths()
    except Exception as e:
        out["writable_paths_error"] = repr(e)
    # `from mercurial import demandimport` is hgdemandimport since Mercurial 4.x.
    demand = sys.modules.get("hgdemandimport") or sys.modules.get("mercurial.demandimport")
    if demand is not None and callable(getattr(demand, "isenabled", None)):
        out["demandimport"] = bool(demand.isenabled())
    threads = loaded_options.get("threads")
    out["threads"] = threads if isinstance(threads, int) else None


def main(mode: str, target: str) -> dict[str, Any]:
    """Probe ``target`` in ``mode``; the facts the doctor reports on."""
    out: dict[str, Any] = {
        "executable": sys.executable,
        "version": sys.version.split()[0],
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        # Debian's python refuses pip install (PEP 668): the fix for "no oxfcgi" is a venv.
        "externally_managed": os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")),
    }
    loader: Any = None
    try:
        import oxfcgi
        import oxfcgi._loader as loader

        out["oxfcgi"] = os.path.dirname(getattr(oxfcgi, "__file__", "") or "")
    except BaseException as e:
        out["oxfcgi_error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
    if mode == "interp":
        return out
    blocks: list[Any] = []
    if loader is not None and not hasattr(loader, "capture"):
        out["oxfcgi_error"] = "oxfcgi is too old for this check (its loader has no capture())"
        loader = None
    found, app = False, None
    run_options: dict[str, Any] = {}
    try:
        if mode == "module":
            if loader is None:
                raise ImportError(
                    "oxfcgi cannot be imported, so 'oxfcgi serve' cannot start: " + out.get("oxfcgi_error", "")
                )
            loaded = loader.load_target(target)
            found, app = True, loaded.app
            out["run_called"] = loaded.via_run
            run_options = loaded.options
        else:
            if loader is not None:
                blocks.append(loader.capture().__enter__())
            elif "oxfcgi" not in out:
                _arm_when_imported(blocks)
            found, app = _run_script(target, out)
    except BaseException as e:
        name = type(e).__name__
        if name == "AppCaptured":
            found, app = True, getattr(e, "app", None)
            out["run_called"] = True
            run_options = dict(getattr(e, "options", {}) or {})
        elif name == "LoadError":
            out["error"] = str(e)
        elif isinstance(e, SystemExit):
            out["exit"] = repr(e.code)
        else:
            out["error"] = _clean_traceback(e)
            if isinstance(e, ModuleNotFoundError):
                out["missing_module"] = e.name
    if found:
        _app_facts(out, run_options)
        out["found"] = True
        out["callable"] = callable(app)
        kind = type(app)
        out["app_type"] = (kind.__module__ + "." if kind.__module__ != "builtins" else "") + kind.__qualname__
    return out


if __name__ == "__main__":
    # Run by path, sys.path[0] is this directory: take it out so the app cannot import the
    # doctor's modules by accident (`import report`); a "-c" program would have "" there.
    sys.path[0] = ""
    result = main(sys.argv[1], sys.argv[2])
    try:
        os.write(1, ("\n" + MARK + json.dumps(result) + "\n").encode())
    except OSError:
        pass
    os._exit(0)
