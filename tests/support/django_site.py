"""A real Django project, as a new user makes one: ``django-admin startproject mysite``,
untouched but for ``ALLOWED_HOSTS``, migrated, with a superuser; and an HTTP client that
logs into its admin and submits its forms (cookies, the CSRF token).

``make_project(directory, python)`` runs Django's own commands with ``python`` (which
must import Django), so the project is exactly what ``startproject`` writes.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct-horse-battery-staple"


def make_project(directory: Path, python: str, name: str = "mysite") -> Path:
    """``startproject NAME DIRECTORY`` (DIRECTORY/manage.py, DIRECTORY/NAME/settings.py),
    ``ALLOWED_HOSTS = ["*"]``, ``migrate`` and a superuser. Returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([python, "-m", "django", "startproject", name, str(directory)], check=True, env=env, timeout=120)
    settings = directory / name / "settings.py"
    text = settings.read_text()
    assert "ALLOWED_HOSTS = []" in text, "startproject's settings changed shape"
    settings.write_text(text.replace("ALLOWED_HOSTS = []", 'ALLOWED_HOSTS = ["*"]'))
    manage = [python, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], check=True, cwd=directory, env=env, capture_output=True)
    subprocess.run(
        [*manage, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com"],
        check=True,
        cwd=directory,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        capture_output=True,
    )
    return directory


class Browser:
    """Enough of a browser for Django's admin: one cookie jar, forms with their CSRF
    token, redirects reported (not followed) so tests can check where they point."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Host": f"{self.host}:{self.port}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            for header in resp.headers.get_all("Set-Cookie") or []:
                cookie = SimpleCookie(header)
                for key, morsel in cookie.items():
                    self.cookies[key] = morsel.value
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, text
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path)

    @staticmethod
    def form(page: str, form_id: str) -> tuple[str, dict[str, str]]:
        """The action and the hidden fields (the CSRF token among them) of the form with
        ``id=form_id`` (Django's admin pages also hold a logout form)."""
        match = re.search(r"<form\b[^>]*\bid=\"" + re.escape(form_id) + r"\"[^>]*>", page)
        assert match, page[:3000]
        tag = match.group(0)
        action = re.search(r'action="([^"]*)"', tag)
        rest = page[match.end() :]
        rest = rest[: rest.find("</form>")]
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', rest))
        return (action.group(1) if action else "").replace("&amp;", "&"), hidden

    def login(self, prefix: str) -> None:
        """Log into the admin mounted at ``prefix`` (the redirects must stay under it)."""
        status, headers, _ = self.get(f"{prefix}/admin/")
        assert status == 302 and headers["location"] == f"{prefix}/admin/login/?next={prefix}/admin/", headers
        status, _, page = self.get(headers["location"])
        assert status == 200, page[:500]
        action, hidden = self.form(page, "login-form")
        assert action == f"{prefix}/admin/login/?next={prefix}/admin/", action
        status, headers, page = self.request(
            "POST", action, {**hidden, "username": ADMIN_USER, "password": ADMIN_PASSWORD}
        )
        assert status == 302 and headers["location"] == f"{prefix}/admin/", (status, headers, page[:2000])
        assert "sessionid" in self.cookies
