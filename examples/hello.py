"""The example app the README serves: a WSGI app with a few routes.

oxfcgi serve examples/hello.py --bind 127.0.0.1:9000
oxfcgi request 127.0.0.1:9000 /hello?name=you
"""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path in ("/", "/hello"):
        query = environ.get("QUERY_STRING", "")
        name = dict(p.partition("=")[::2] for p in query.split("&") if p).get("name", "world")
        body = f"Hello, {name}! (served by oxfcgi over FastCGI)\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
