"""Load a WSGI application for ``oxfcgi serve TARGET``.

TARGET is ``module:attr`` / ``module`` (attr defaults to ``application``, then ``app``), or
the path of a ``.py``/``.fcgi`` file (optionally ``file.py:attr``).

Deployed ``.fcgi`` scripts usually end with ``WSGIServer(app).run()`` or ``run(app)`` at
import time. :func:`oxfcgi.run` and ``WSGIServer.run`` call :func:`intercept` first: while
:func:`load_app` is running it raises :class:`AppCaptured`, which stops the script right
there and hands its application to the CLI, so the CLI's own options apply.

Errors are reported as :class:`LoadError` (message for stderr; the CLI exits with status 2).
"""
from __future__ import annotations

import importlib
import os
import sys
import types

__all__ = ["AppCaptured", "LoadError", "intercept", "load_app", "capturing", "FILE_MODULE_NAME"]

#: Module name a file target is executed under (``__name__`` inside the script), so an
#: ``if __name__ == "__main__":`` block does not run.
FILE_MODULE_NAME = "__oxfcgi_app__"

#: Nesting depth of :func:`load_app` calls in progress; :func:`intercept` captures while > 0.
_capturing = 0

_DEFAULT_ATTRS = ("application", "app")


class AppCaptured(BaseException):
    """Raised by :func:`intercept` during a load; ``.app`` is the application passed to run().

    It derives from BaseException so a script's ``except Exception:`` does not swallow it.
    """

    def __init__(self, app):
        super().__init__(app)
        self.app = app


class LoadError(Exception):
    """The target could not be loaded. ``str(err)`` is the message for the user."""


def capturing() -> bool:
    """True while :func:`load_app` is loading a target."""
    return _capturing > 0


def intercept(app) -> None:
    """Called first by ``oxfcgi.run()`` and ``WSGIServer.run()``.

    :raises AppCaptured: a :func:`load_app` is in progress; the caller must not serve.
    :returns: None otherwise (serve normally).
    """
    if _capturing > 0:
        raise AppCaptured(app)


_FLUP_ALIASES = {
    "flup.server.fcgi": "oxfcgi.server.fcgi",
    "flup.server.fcgi_fork": "oxfcgi.server.fcgi_fork",
    "flup.server.fcgi_single": "oxfcgi.server.fcgi_single",
}


class _FlupAliases:
    """While loading, ``import flup.server.fcgi`` (and ``fcgi_fork``, ``fcgi_single``) gives
    oxfcgi's flup-compatible modules, so an unchanged legacy ``.fcgi`` script's
    ``WSGIServer(app).run()`` is captured instead of starting flup. Other flup modules
    (``flup.middleware``...) stay real if flup is installed. Undone after the load."""

    def __enter__(self):
        self.saved: dict[str, object] = {}
        try:
            modules = {name: importlib.import_module(target) for name, target in _FLUP_ALIASES.items()}
        except Exception:            # the engine is missing: nothing to alias to
            return self
        for parent in ("flup", "flup.server"):
            if parent not in sys.modules:
                try:
                    importlib.import_module(parent)
                except ImportError:
                    stub = types.ModuleType(parent)
                    stub.__path__ = []
                    self._set(parent, stub)
        for name, module in modules.items():
            self._set(name, module)
        return self

    def _set(self, name: str, module) -> None:
        self.saved[name] = sys.modules.get(name)
        sys.modules[name] = module

    def __exit__(self, *exc):
        for name, previous in reversed(list(self.saved.items())):
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        return False


def _split_target(target: str) -> tuple[str, str | None, bool]:
    """Return (module-or-path, attr or None, is_file)."""
    base, attr = target, None
    head, sep, tail = target.rpartition(":")
    if sep and head and tail and all(part.isidentifier() for part in tail.removesuffix("()").split(".")):
        base, attr = head, tail
    is_file = (base.endswith((".py", ".fcgi", ".wsgi")) or os.sep in base or
               (os.path.isfile(base) and not base.replace(".", "").isidentifier()))
    return base, attr, is_file


def _exec_file(path: str) -> types.ModuleType:
    """Execute a script file as module ``__oxfcgi_app__`` (like runpy.run_path, but kept in
    sys.modules so pickling and logging by module name work)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise LoadError(f"oxfcgi: cannot load {path}: no such file")
    if not os.path.isfile(path):
        raise LoadError(f"oxfcgi: cannot load {path}: not a regular file")
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise LoadError(f"oxfcgi: cannot read {path}: {e.strerror}") from e
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = types.ModuleType(FILE_MODULE_NAME)
    module.__file__ = path
    module.__builtins__ = __builtins__
    module.__loader__ = None
    module.__package__ = None
    module.__spec__ = None
    sys.modules[FILE_MODULE_NAME] = module
    code = compile(source, path, "exec")   # SyntaxError is reported with the import errors
    exec(code, module.__dict__)
    return module


def _import_module(name: str) -> types.ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only "the target itself is missing" gets the short message; a missing dependency
        # inside the target is an import error with a traceback.
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise LoadError(f"oxfcgi: cannot import {name!r}: no module named {e.name!r} "
                            f"(sys.path[0] = {sys.path[0]!r})") from e
        raise


def _resolve(module: types.ModuleType, attr: str | None, what: str):
    if attr is None:
        for name in _DEFAULT_ATTRS:
            if hasattr(module, name):
                return getattr(module, name), f"{what}:{name}"
        raise LoadError(f"oxfcgi: {what} has no 'application' or 'app' attribute; "
                        f"name the WSGI callable as {what}:NAME")
    call = attr.endswith("()")
    obj = module
    for part in attr.removesuffix("()").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"oxfcgi: {what} has no attribute {attr.removesuffix('()')!r}") from None
    if call:
        obj = obj()
    return obj, f"{what}:{attr}"


def load_app(target: str):
    """Load TARGET and return its WSGI callable.

    :param target: ``module``, ``module:attr``, ``module:factory()``, ``path/to/app.fcgi``,
        ``app.py`` or ``app.py:attr``.
    :raises LoadError: file or module missing, attribute missing, not callable, or the code
        raised while loading (the message then includes the traceback).
    """
    global _capturing
    base, attr, is_file = _split_target(target)
    what = base
    _capturing += 1
    try:
        try:
            with _FlupAliases():
                module = _exec_file(base) if is_file else _import_module(base)
        except AppCaptured as captured:
            app, source = captured.app, f"{what} (the application it passed to run())"
        else:
            app, source = _resolve(module, attr, what)
    except LoadError:
        raise
    except AppCaptured as captured:    # run() called by a factory: TARGET:create_app()
        app, source = captured.app, f"{what} (the application it passed to run())"
    except (Exception, SystemExit) as e:
        tb_obj = e.__traceback__
        while tb_obj is not None and (tb_obj.tb_frame.f_code.co_filename == __file__ or
                                      tb_obj.tb_frame.f_code.co_filename == importlib.__file__ or
                                      tb_obj.tb_frame.f_code.co_filename.startswith("<frozen ")):
            tb_obj = tb_obj.tb_next       # hide the loader's and importlib's own frames
        import traceback

        tb = "".join(traceback.format_exception(type(e), e, tb_obj))
        raise LoadError(f"oxfcgi: error while loading {target!r}:\n{tb.rstrip()}") from e
    finally:
        _capturing -= 1
    if attr is not None and is_file and source.endswith("run())"):
        # the script called run() before defining everything; still honour an explicit attr
        module = sys.modules.get(FILE_MODULE_NAME)
        if module is not None and hasattr(module, attr.removesuffix("()").split(".")[0]):
            app, source = _resolve(module, attr, what)
    if not callable(app):
        raise LoadError(f"oxfcgi: {source} is not callable (got {type(app).__name__}); "
                        "a WSGI application is a callable app(environ, start_response)")
    return app
