"""The web console: a static single-page client of the public API, served by the ingress.

No build step and no third-party script: three files in ``static/`` (HTML, one ES module, CSS). A
strict Content-Security-Policy forbids inline scripts, framing and every origin but this one; the
API trusts only the bearer token in a header, so no cookie is there for a cross-site request to use.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from pydantic import BaseModel, Field

from api.problems import StrictBody
from api.state import resources

STATIC = Path(__file__).parent / "static"
CONSOLE_PATH = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@get("/", exclude_from_auth=True, include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    return Redirect(CONSOLE_PATH)


@get(
    CONSOLE_PATH,
    exclude_from_auth=True,
    include_in_schema=False,
    media_type="text/html",
    after_request=secure,
    sync_to_thread=False,
)
def console_page() -> Response[bytes]:
    # Never cached, so a new release's asset names reach the browser at once.
    return Response((STATIC / "index.html").read_bytes(), headers={"Cache-Control": "no-cache"})


console_assets = create_static_files_router(
    path=f"{CONSOLE_PATH}/static",
    directories=[STATIC],
    name="console-static",
    after_request=secure,
    opt={"exclude_from_auth": True},
)


class LoginIn(StrictBody):
    code: str = Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class LoginOut(BaseModel):
    token: str


@post("/api/v1/console/login", exclude_from_auth=True, status_code=200, tags=["console"])
async def console_login(data: LoginIn, state: State) -> LoginOut:
    """Trade a one-time sign-in code (printed by `agentapi dev`) for its token; the code then stops working."""
    res = resources(state)
    token = await res.redis.getdel(res.names.console_login(data.code))
    if token is None:
        raise NotFoundException("this sign-in link was used already or has expired")
    return LoginOut(token=token.decode() if isinstance(token, bytes) else token)
