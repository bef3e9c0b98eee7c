"""The yardstick for the ingress bench: one Litestar POST handler with no auth, database or Redis."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, post


@post("/message", status_code=200)
async def message(data: dict[str, Any]) -> dict[str, bool]:
    return {"ok": True}


app = Litestar(route_handlers=[message], logging_config=None)
