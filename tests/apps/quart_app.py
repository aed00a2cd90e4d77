"""A Quart app (Flask's API on ASGI) for the real-app ASGI tests (tests/test_asgi_apps.py)."""

from __future__ import annotations

from quart import Quart, jsonify, request, url_for

app = Quart(__name__)


@app.route("/")
async def index():
    return jsonify(page="index", item_url=url_for("item", item_id=7))


@app.route("/items/<int:item_id>")
async def item(item_id: int):
    return jsonify(item_id=item_id)


@app.route("/form", methods=["POST"])
async def form():
    data = await request.form
    return jsonify(form=data.to_dict(flat=False))
