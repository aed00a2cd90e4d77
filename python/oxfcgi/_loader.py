"""Load a WSGI application for ``oxfcgi serve TARGET``.

TARGET is ``module:attr`` / ``module`` (attr defaults to ``application``, then ``app``), or
the path of a ``.py``/``.fcgi`` file (optionally ``file.py:attr``).

Deployed ``.fcgi`` scripts usually end with ``WSGIServer(app).run()`` or ``run(app)`` at
import time. :func:`oxfcgi.run` and ``WSGIServer.run`` call :func:`intercept` first: inside
:func:`capture` (which :func:`load_target` uses) it raises :class:`AppCaptured`, which stops
the script right there and hands its application, and the settings it passed, to the
caller.

Errors are reported as :class:`LoadError` (message for stderr; the CLI exits with status 2).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

__all__ = [
    "AppCaptured",
    "Capture",
    "LoadError",
    "Loaded",
    "capture",
    "capturing",
    "intercept",
    "load_app",
    "load_target",
    "prepare_paths",
    "split_target",
    "FILE_MODULE_NAME",
]

#: Module name a file target is executed under (``__name__`` inside the script), so an
#: ``if __name__ == "__main__":`` block does not run.
FILE_MODULE_NAME = "__oxfcgi_app__"

#: Nesting depth of :func:`capture` blocks in progress; :func:`intercept` captures while > 0.
_capturing = 0

_DEFAULT_ATTRS = ("application", "app")


class AppCaptured(BaseException):
    """Raised by :func:`intercept` inside :func:`capture`.

    ``.app`` is the application passed to ``run()``; ``.options`` the settings passed with
    it (``run()``'s keywords, or flup's arguments mapped onto settings); ``.sources`` says
    where each came from when not a ``run()`` argument (``flup WSGIServer(maxThreads=)``).
    It derives from BaseException so a script's ``except Exception:`` does not swallow it.
    """

    def __init__(
        self, app: object, options: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(app)
        self.app = app
        self.options: dict[str, Any] = dict(options or {})
        self.sources: dict[str, str] = dict(sources or {})


class LoadError(Exception):
    """The target could not be loaded. ``str(err)`` is the message for the user."""


class Loaded:
    """A loaded target: the WSGI ``app``, ``description`` (``mysite.wsgi:application``), and
    when its script called ``run()`` (``via_run``), the settings it passed (``options``,
    with ``sources``)."""

    __slots__ = ("app", "options", "sources", "description", "via_run", "file")

    def __init__(
        self,
        app: Any,
        description: str,
        options: Mapping[str, Any] | None = None,
        sources: Mapping[str, str] | None = None,
        via_run: bool = False,
        file: str | None = None,
    ) -> None:
        self.app = app
        self.description = description
        self.via_run = via_run
        #: The file the app was loaded from (the script, or the module's), if any.
        self.file = file
        self.options: dict[str, Any] = dict(options or {})
        self.sources: dict[str, str] = dict(sources or {})


def capturing() -> bool:
    """True inside a :func:`capture` block."""
    return _capturing > 0


def intercept(app: object, options: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None) -> None:
    """Called first by ``oxfcgi.run()`` and ``WSGIServer.run()``.

    :raises AppCaptured: inside :func:`capture`; the caller must not serve.
    :returns: None otherwise (serve normally).
    """
    if _capturing > 0:
        raise AppCaptured(app, options, sources)


class Capture:
    """A block in which ``oxfcgi.run()`` and flup's ``WSGIServer.run()`` do not serve.

    Inside it, ``import flup.server.fcgi`` (``fcgi_fork``, ``fcgi_single``) gives oxfcgi's
    flup-compatible modules, and the first ``run()`` call stops the code with
    :class:`AppCaptured`; the block ends there (the exception is swallowed by the block)
    and ``captured`` holds it. Nestable; usable through :func:`capture`::

        with capture() as c:
            exec(code, namespace)
        if c.captured is not None:
            app = c.captured.app
    """

    def __init__(self) -> None:
        self.captured: AppCaptured | None = None
        self._aliases = _FlupAliases()

    def __enter__(self) -> Capture:
        global _capturing
        _capturing += 1
        self._aliases.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        global _capturing
        _capturing -= 1
        self._aliases.__exit__(exc_type, exc, tb)
        if isinstance(exc, AppCaptured):
            self.captured = exc
            return True
        return False


def capture() -> Capture:
    """A :class:`Capture` block."""
    return Capture()


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

    def __init__(self) -> None:
        self.saved: dict[str, types.ModuleType | None] = {}

    def __enter__(self) -> _FlupAliases:
        self.saved = {}
        try:
            modules = {name: importlib.import_module(target) for name, target in _FLUP_ALIASES.items()}
        except Exception:  # the engine is missing: nothing to alias to
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

    def _set(self, name: str, module: types.ModuleType) -> None:
        self.saved[name] = sys.modules.get(name)
        sys.modules[name] = module

    def __exit__(self, *exc: object) -> None:
        for name, previous in reversed(list(self.saved.items())):
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def split_target(target: str) -> tuple[str, str | None, bool]:
    """``(module-or-path, attr or None, is_file)`` of a TARGET.

    ``:name``, ``:dotted.name`` and gunicorn's ``:factory()`` are the attribute. The rest
    is a file when it names a path (it holds a ``/``) or such a file exists; otherwise a
    module: ``mysite.wsgi`` is Django's module, not a file called ``mysite.wsgi``.
    """
    base, attr = target, None
    head, sep, tail = target.rpartition(":")
    if sep and head and tail and all(part.isidentifier() for part in tail.removesuffix("()").split(".")):
        base, attr = head, tail
    is_file = os.sep in base or os.path.isfile(base)
    return base, attr, is_file


def _package_root(path: str) -> tuple[str, str] | None:
    """For a file inside a package (``/srv/mysite/mysite/wsgi.py`` with an
    ``__init__.py`` beside it): the directory above the top package and the module's
    dotted name (``/srv/mysite``, ``mysite.wsgi``), so it is imported as the package
    expects (relative imports, ``DJANGO_SETTINGS_MODULE``). None for a plain script."""
    directory, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    if ext != ".py" or not stem.isidentifier():
        return None
    parts = [stem]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        if not package.isidentifier():
            return None
        parts.insert(0, package)
    return (directory, ".".join(parts)) if len(parts) > 1 else None


def _exec_file(path: str) -> types.ModuleType:
    """Execute a script file as module ``__oxfcgi_app__`` (like runpy.run_path, but kept in
    sys.modules so pickling and logging by module name work)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise LoadError(f"oxfcgi: cannot load {path}: no such file")
    if not os.path.isfile(path):
        raise LoadError(f"oxfcgi: cannot load {path}: not a regular file")
    in_package = _package_root(path)
    if in_package is not None:
        root, dotted = in_package
        if root not in sys.path:
            sys.path.insert(0, root)
        return _import_module(dotted)
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
    module.__dict__["__builtins__"] = __builtins__
    module.__loader__ = None
    module.__package__ = None
    module.__spec__ = None
    sys.modules[FILE_MODULE_NAME] = module
    code = compile(source, path, "exec")  # SyntaxError is reported with the import errors
    exec(code, module.__dict__)
    return module


def _import_module(name: str) -> types.ModuleType:
    # The current directory comes first, as with `python -m` (and gunicorn), also under the
    # `oxfcgi` console script, whose sys.path[0] is its bin/ directory.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only "the target itself is missing" gets the short message; a missing dependency
        # inside the target is an import error with a traceback.
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise LoadError(
                f"oxfcgi: cannot import {name!r}: no module named {e.name!r} (sys.path[0] = {sys.path[0]!r})"
            ) from e
        raise


def _resolve(module: types.ModuleType, attr: str | None, what: str) -> tuple[Any, str]:
    if attr is None:
        for name in _DEFAULT_ATTRS:
            if hasattr(module, name):
                return getattr(module, name), f"{what}:{name}"
        raise LoadError(
            f"oxfcgi: {what} has no 'application' or 'app' attribute; name the WSGI callable as {what}:NAME"
        )
    call = attr.endswith("()")
    obj: Any = module
    for part in attr.removesuffix("()").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"oxfcgi: {what} has no attribute {attr.removesuffix('()')!r}") from None
    if call:
        obj = obj()
    return obj, f"{what}:{attr}"


def prepare_paths(chdir: str | None = None, pythonpath: tuple[str, ...] = ()) -> None:
    """gunicorn's ``--chdir`` and ``--pythonpath``: change into ``chdir`` and put each
    ``pythonpath`` entry first on ``sys.path`` (before the app is loaded).

    :raises LoadError: ``chdir`` cannot be entered.
    """
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as e:
            raise LoadError(f"oxfcgi: cannot change into {chdir} (chdir): {e.strerror}") from e
    for entry in reversed(pythonpath):
        entry = os.path.abspath(entry)
        if entry not in sys.path:
            sys.path.insert(0, entry)


def load_target(target: str) -> Loaded:
    """Load TARGET: its WSGI callable and the settings its script passed to ``run()``.

    :param target: ``module``, ``module:attr``, ``module:factory()`` (as gunicorn), a script
        ``path/to/app.fcgi``, ``app.py`` or ``app.py:attr`` (a file inside a package, such
        as Django's ``mysite/wsgi.py``, is imported as ``mysite.wsgi`` from the project root).
    :raises LoadError: file or module missing, attribute missing, not callable, or the code
        raised while loading (the message then includes the traceback).
    """
    base, attr, is_file = split_target(target)
    if not is_file and base.endswith((".py", ".fcgi", ".cgi")):
        raise LoadError(f"oxfcgi: cannot load {base}: no such file ({os.path.abspath(base)})")
    what = base
    app: Any = None
    source = what
    try:
        with capture() as block:
            module = _exec_file(base) if is_file else _import_module(base)
            app, source = _resolve(module, attr, what)  # a factory may call run() too
        captured = block.captured
    except LoadError:
        raise
    except (Exception, SystemExit) as e:
        tb_obj = e.__traceback__
        while tb_obj is not None and (
            tb_obj.tb_frame.f_code.co_filename == __file__
            or tb_obj.tb_frame.f_code.co_filename == importlib.__file__
            or tb_obj.tb_frame.f_code.co_filename.startswith("<frozen ")
        ):
            tb_obj = tb_obj.tb_next  # hide the loader's and importlib's own frames
        import traceback

        from . import _hints

        tb = "".join(traceback.format_exception(type(e), e, tb_obj))
        hint = _hints.environment_hint(e)
        raise LoadError(
            f"oxfcgi: error while loading {target!r}:\n{tb.rstrip()}" + (f"\n{hint}" if hint else "")
        ) from e
    options: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if captured is not None:
        app, source = captured.app, f"{what} (the application it passed to run())"
        options, sources = captured.options, captured.sources
        if attr is not None and is_file:
            # the script called run() before defining everything; still honour an explicit attr
            in_package = _package_root(os.path.abspath(base))
            file_module = sys.modules.get(in_package[1] if in_package else FILE_MODULE_NAME)
            if file_module is not None and hasattr(file_module, attr.removesuffix("()").split(".")[0]):
                app, source = _resolve(file_module, attr, what)
    if not callable(app):
        raise LoadError(
            f"oxfcgi: {source} is not callable (got {type(app).__name__}); "
            "a WSGI application is a callable app(environ, start_response)"
        )
    file = os.path.abspath(base) if is_file else getattr(sys.modules.get(base), "__file__", None)
    return Loaded(app, source, options, sources, via_run=captured is not None, file=file)


def load_app(target: str) -> Callable[..., Any]:
    """Load TARGET and return its WSGI callable (see :func:`load_target`)."""
    app: Callable[..., Any] = load_target(target).app
    return app
