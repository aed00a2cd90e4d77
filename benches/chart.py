"""The benchmark chart: requests per second and server CPU per request, hello world, per server.

Drawn with matplotlib (installed into benches/.venv by compare.py) from the results of one
run, into ``benches/results.png``; the README shows that file. Bars for servers without a
number in a mode are left out.
"""

from __future__ import annotations

from pathlib import Path


def draw(rows: list[tuple[str, float | None, float | None, float | None]], out: Path, title: str) -> None:
    """``rows``: (server label, req/s through nginx, CPU µs per request through nginx,
    CPU µs per request with a new connection per request, 16 at a time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r[1] is not None]
    labels = [r[0] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.8), sharey=True)
    y = range(len(rows))
    left.barh(list(y), [r[1] for r in rows], color="#4c72b0")
    left.set_xlabel("requests/s, hello world, wrk -c16 → nginx → server")
    left.set_yticks(list(y), labels)
    left.invert_yaxis()
    for i, r in enumerate(rows):
        left.text(r[1], i, f" {r[1]:,.0f}", va="center", fontsize=8)
    keep = [r[2] if r[2] is not None else 0 for r in rows]
    fresh = [r[3] if r[3] is not None else 0 for r in rows]
    h = 0.4
    right.barh([i - h / 2 for i in y], keep, height=h, color="#dd8452", label="through nginx (kept connections)")
    fresh_label = "a new connection per request, 16 at a time"
    right.barh([i + h / 2 for i in y], fresh, height=h, color="#55a868", label=fresh_label)
    right.set_xlabel("server CPU µs per request (lower is better)")
    right.legend(loc="lower right", fontsize=8)
    for i, (a, b) in enumerate(zip(keep, fresh, strict=True)):
        if a:
            right.text(a, i - h / 2, f" {a:.0f}", va="center", fontsize=7)
        if b:
            right.text(b, i + h / 2, f" {b:.0f}", va="center", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
