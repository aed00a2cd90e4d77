"""A minimal single-file Django project (settings, URLconf and views in this module).

Serve it with ``oxfcgi serve tests.apps.django_app:application``.  The ``hello`` view
answers JSON with what Django derived from the WSGI environ, including a
``reverse()``d link, so a test can check that SCRIPT_NAME becomes the URL prefix.
"""

from __future__ import annotations

import sys

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="oxfcgi-tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )

import django

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after django.setup()
from django.http import JsonResponse  # noqa: E402
from django.urls import path, reverse  # noqa: E402


def hello(request, name):
    return JsonResponse(
        {
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META.get("SCRIPT_NAME"),
            "name": name,
            "GET": {k: request.GET.getlist(k) for k in request.GET},
            "link": reverse("hello", args=["other"]),
            "absolute": request.build_absolute_uri(reverse("hello", args=["abs"])),
            "method": request.method,
            "is_secure": request.is_secure(),
        }
    )


def echo(request):
    return JsonResponse({"method": request.method, "body": request.body.decode("latin-1"), "POST": request.POST.dict()})


urlpatterns = [
    path("hello/<str:name>", hello, name="hello"),
    path("echo", echo, name="echo"),
]

application = get_wsgi_application()

if __name__ == "__main__":  # python tests/apps/django_app.py: serve with wsgiref on :8000
    from wsgiref.simple_server import make_server

    make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000, application).serve_forever()
