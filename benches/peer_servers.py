"""Start the peer FastCGI servers that have only a Python API (run by benches/compare.py).

    python benches/peer_servers.py KIND MODULE:APP SOCKET_PATH

KIND:
    flup-thread   flup.server.fcgi.WSGIServer (threaded, flup 1.0.3 defaults)
    flup-fork     flup.server.fcgi_fork.WSGIServer (prefork, flup 1.0.3 defaults)
    fcgisgi       fcgisgi.run_wsgi_server (asyncio + thread pool, defaults)
    fcgisgi-asgi  fcgisgi.run_asgi_server (an ASGI app, defaults)
    bare          import the app and sleep (the memory baseline); SOCKET_PATH is ignored
    bare-oxfcgi   the same, having also imported oxfcgi (its Python package and engine)

Each prints "ready" on stdout once the app is imported, then serves until SIGTERM/SIGINT.
"""

import importlib
import os
import signal
import sys
import time


def load(target):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name or "application")


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    kind, target, sock = argv[1], argv[2], argv[3]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    app = load(target)
    if not kind.startswith("bare") and os.path.exists(sock):
        os.unlink(sock)

    if kind in ("bare", "bare-oxfcgi"):
        if kind == "bare-oxfcgi":
            import oxfcgi  # noqa: F401
        print("ready", flush=True)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        while True:
            time.sleep(3600)
    elif kind == "flup-thread":
        from flup.server.fcgi import WSGIServer

        server = WSGIServer(app, bindAddress=sock, umask=0)
        print("ready", flush=True)
        server.run()
    elif kind == "flup-fork":
        from flup.server.fcgi_fork import WSGIServer

        server = WSGIServer(app, bindAddress=sock, umask=0)
        print("ready", flush=True)
        server.run()
    elif kind == "fcgisgi":
        import asyncio

        from fcgisgi import run_wsgi_server

        print("ready", flush=True)
        os.umask(0)
        asyncio.run(run_wsgi_server(app, bind_address=sock))
    elif kind == "fcgisgi-asgi":
        import asyncio

        from fcgisgi import run_asgi_server

        print("ready", flush=True)
        os.umask(0)
        asyncio.run(run_asgi_server(app, bind_address=sock))
    else:
        sys.exit(f"unknown kind {kind!r}\n\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
