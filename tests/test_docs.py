"""The documentation and the release plumbing: the MkDocs site builds strictly (its config
blocks are `oxfcgi config` output, generated at build time), every finding the deployment
doctor can print has a troubleshooting entry, the release workflow calls the wheel script, and
the package metadata points at a user-facing README and a LICENSE."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _template(node: ast.AST) -> str | None:
    """A title as the reader sees it: an f-string's fields become "…"."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _template(node.left)  # "title" + note_direct
    return None


def doctor_titles() -> set[str]:
    """Every FAIL/WARN title `oxfcgi check` can print, from its source."""
    titles: set[str] = set()
    for path in sorted((ROOT / "python" / "oxfcgi" / "check").glob("*.py")):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            assigned: dict[str, list[ast.AST]] = {}
            for node in ast.walk(func):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            assigned.setdefault(target.id, []).append(node.value)
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr in ("fail", "warn") and node.args:
                    arg = node.args[0]
                elif node.func.attr == "add" and len(node.args) > 1:
                    arg = node.args[1]
                else:
                    continue
                candidates = assigned.get(arg.id, []) if isinstance(arg, ast.Name) else [arg]
                for candidate in candidates:
                    text = _template(candidate)
                    if text and text.strip("… "):
                        titles.add(text)
    return titles


def startup_messages() -> set[str]:
    """The errors oxfcgi prints when it cannot start: the loader's (LoadError), the
    listener's (BindError in src/server/listener.rs) and the start-up failure hook's."""
    messages: set[str] = set()
    loader = ast.parse((ROOT / "python" / "oxfcgi" / "_loader.py").read_text())
    for node in ast.walk(loader):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "LoadError" and node.args:
            text = _template(node.args[0])
            if text:
                messages.add(text.removeprefix("oxfcgi: ").split("\n")[0])
    rust = (ROOT / "src" / "server" / "listener.rs").read_text()
    for match in re.finditer(r'#\[error\(\s*"((?:[^"\\]|\\.)*)"', rust, re.S):
        text = re.sub(r"\\\n\s*", "", match.group(1)).replace('\\"', '"')
        messages.add(re.sub(r"\{[^}]*\}", "…", text))
    hook = {
        "_startup.py": "… failed before it could serve (it was started by a FastCGI process manager).",
        "_hints.py": "The application reads the environment variable …, which this process does not have.",
    }
    for module, text in hook.items():
        source = (ROOT / "python" / "oxfcgi" / module).read_text()
        assert all(part.strip() in source for part in text.split("…")), f"{module} no longer says {text!r}"
        messages.add(text)
    return messages


def test_every_startup_error_has_a_troubleshooting_entry():
    assert len(startup_messages()) >= 15, sorted(startup_messages())
    page = re.sub(r"\n[ ]+", " ", (DOCS / "troubleshooting.md").read_text())
    items = [line for line in page.splitlines() if line.startswith("- `oxfcgi` says:")]
    documented = {message for item in items for message in re.findall(r"“([^”]+)”", item)}
    missing = sorted(startup_messages() - documented)
    assert not missing, "add a `oxfcgi` says: “…” entry for:\n" + "\n".join(missing)


def test_the_doctor_titles_are_found():
    titles = doctor_titles()
    assert len(titles) >= 30, sorted(titles)
    assert "The script has CRLF (Windows) line endings" in titles


def test_every_doctor_finding_has_a_troubleshooting_entry():
    # List items joined into one line each; the quoted titles of the "`oxfcgi check`:" items.
    page = re.sub(r"\n[ ]+", " ", (DOCS / "troubleshooting.md").read_text())
    items = [line for line in page.splitlines() if line.startswith("- `oxfcgi check`:")]
    documented = {title for item in items for title in re.findall(r"“([^”]+)”", item)}
    missing = sorted(doctor_titles() - documented)
    assert not missing, "add an entry (or its `oxfcgi check`: “…” line) for:\n" + "\n".join(missing)


def test_troubleshooting_headings_are_what_the_servers_print():
    """Each heading is an error text; the ones our integration tests make real servers print
    are checked against the strings those tests assert on."""
    page = (DOCS / "troubleshooting.md").read_text()
    headings = re.findall(r"^### (.+)$", page, re.M)
    assert len(headings) >= 22, headings
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py")
    for text in ("exceeds MaxRequestLen", "Permission denied"):
        assert any(text in h for h in headings), f"no heading with {text!r}"
        assert text in sources, f"{text!r} is not asserted by any integration test"


def test_the_docs_build_strictly(tmp_path):
    mkdocs = shutil.which("mkdocs") or (Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed (scripts/test.sh installs mkdocs-material)")
        pytest.skip("mkdocs is not installed")
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    nginx = (tmp_path / "site" / "deploy" / "nginx" / "index.html").read_text()
    assert "fastcgi_pass" in nginx and "client_max_body_size" in nginx, "the config block is generated"
    settings = (tmp_path / "site" / "settings" / "index.html").read_text()
    assert "request_slowlog_timeout" in settings and "OXFCGI_THREADS" in settings


def test_the_release_workflow_builds_with_the_wheel_script():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    jobs = workflow["jobs"]
    steps = [step.get("run", "") for step in jobs["linux-x86_64"]["steps"]]
    assert any("scripts/build-wheels.sh" in run for run in steps), steps
    assert jobs["publish"]["permissions"]["id-token"] == "write", "trusted publishing"
    targets = {str(job.get("strategy", {}).get("matrix", {}).get("target", "")) for job in jobs.values()}
    assert any("aarch64" in t for t in targets) and "musllinux" in str(jobs)


def test_the_package_metadata_speaks_to_users():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["readme"] == "README-pypi.md" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert "Topic :: Internet :: WWW/HTTP :: WSGI :: Server" in meta["classifiers"]
    assert {"Framework :: Django", "Framework :: Flask"} <= set(meta["classifiers"])
    readme = (ROOT / meta["readme"]).read_text()
    for developer_only in ("scripts/test.sh", "pip install .", "FAIL", "../shared"):
        assert developer_only not in readme, developer_only
