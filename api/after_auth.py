"""What runs between authentication and the route, in one middleware: the membership check (403),
the rate limits (429) and the JSON content-type check (415), in that order.

They were three middlewares, each a layer of calls on every request for a plain check; what each
does and refuses is unchanged (api.tenancy, api.rate_limit, api.limits).
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import Principal
from api.limits import check_json_content_type
from api.rate_limit import check_rate_limits
from api.tenancy import check_membership


def after_auth_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            principal = scope.get("user")
            if isinstance(principal, Principal):
                await check_membership(scope, principal)
                # The membership may have lowered the principal's role.
                await check_rate_limits(scope, scope["user"])
            check_json_content_type(scope)
        await app(scope, receive, send)

    return middleware
