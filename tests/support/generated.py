"""Reading what ``oxfcgi config`` printed: its code lines, and the shell commands in its comments."""

from __future__ import annotations

import os
import shlex


def code_lines(text: str) -> list[str]:
    """Non-comment, non-blank lines, stripped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def commented_commands(text: str, program_word: str) -> list[list[str]]:
    """Every shell command in the config's comments that contains ``program_word`` (joined
    over ``\\`` continuation lines, split at ``&&``), as argv words, in order."""
    joined = commented_shell_lines(text, "")
    commands = [part.strip() for c in joined for part in c.split("&&")]
    return [shlex.split(c) for c in commands if program_word in c]


def commented_command(text: str, program_word: str) -> list[str]:
    """The one command of :func:`commented_commands` (AssertionError unless exactly one)."""
    (command,) = commented_commands(text, program_word)
    return command


def serve_arguments(text: str) -> list[str]:
    """The arguments after ``oxfcgi serve APP`` of the one serve command in ``text``, without
    ``--user``/``--group`` (the tests run the app as themselves), and without
    ``--socket-group`` when not root (only root may give the socket to the web server's group)."""
    argv = commented_command(text, "oxfcgi serve")
    args = argv[argv.index("serve") + 2 :]
    out = []
    skip = False
    for word in args:
        if skip:
            skip = False
            continue
        if word in ("--user", "--group") or (word == "--socket-group" and os.geteuid() != 0):
            skip = True
            continue
        out.append(word)
    return out


def commented_shell_lines(text: str, program_word: str) -> list[str]:
    """Every whole shell line in the config's comments (``\\`` continuations joined, ``&&``
    kept) that contains ``program_word``: what a user pastes into a shell."""
    lines = [ln.strip()[1:].strip() for ln in text.splitlines() if ln.strip().startswith("#")]
    joined, current = [], ""
    for ln in lines:
        if ln.endswith("\\"):
            current += ln[:-1] + " "
            continue
        joined.append(current + ln)
        current = ""
    return [line for line in joined if program_word in line]
