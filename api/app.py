"""The Litestar ingress: authenticate, authorize per tenant, validate, persist, publish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, asgi
from litestar.handlers import ASGIRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import Receive, Scope, Send

from api.address_limit import address_limit_middleware
from api.after_auth import after_auth_middleware
from api.auth import auth_middleware, openapi_components, openapi_security
from api.console import console_assets, console_login, console_page, root
from api.edge import edge_middleware
from api.mcp_gateway import build_gateway
from api.metrics import metrics
from api.problems import make_exception_handlers, problem_responses
from api.routes.agent_control import alias_internal_screen, internal_screen, interrupt
from api.routes.agents import list_agents
from api.routes.audit import query_audit
from api.routes.chat import chat, chat_stream
from api.routes.client_keys import create_client_key, revoke_client_keys_of_session
from api.routes.health import health, ready
from api.routes.mcp import McpConfigurationController, call_tool, test_configuration
from api.routes.mcp_oauth import oauth_callback, oauth_callback_post, oauth_disconnect, oauth_init
from api.routes.openapi import openapi_document, session_openapi_document
from api.routes.orgs import OrgController
from api.routes.prompts import PromptController
from api.routes.sessions import (
    SessionController,
    alias_events,
    alias_messages,
    alias_send_message,
    alias_status,
)
from api.routes.tenant_settings import read_settings, write_settings
from api.routes.uploads import upload_file
from api.routes.users import erase_user, export_user
from api.routes.webhooks import WebhookController, receive_delivery
from api.shutdown import drain_on_signals
from api.state import lifespan, resources
from schemas.settings import GATEWAY_PATH, Settings, get_settings
from services.gc_tuning import tune_gc
from services.observability import configure_process

VERSION = "0.1.0"


def _gateway(app_ref: list[Litestar]) -> tuple[ASGIRouteHandler, Any]:
    """The MCP gateway mount, and a lifespan that runs its fastmcp session manager."""
    gateway, mcp_app = build_gateway(lambda: resources(app_ref[0].state))

    @asgi(GATEWAY_PATH, is_mount=True, exclude_from_auth=True, copy_scope=True, include_in_schema=False)
    async def mcp_gateway(scope: Scope, receive: Receive, send: Send) -> None:
        await gateway(scope, receive, send)

    @asynccontextmanager
    async def gateway_lifespan(_: Litestar) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    return mcp_gateway, gateway_lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_process(settings, "ingress")
    app_ref: list[Litestar] = []
    mcp_gateway, gateway_lifespan = _gateway(app_ref)
    app = Litestar(
        route_handlers=[
            health,
            ready,
            metrics,
            openapi_document,
            session_openapi_document,
            SessionController,
            interrupt,
            internal_screen,
            create_client_key,
            revoke_client_keys_of_session,
            alias_status,
            alias_messages,
            alias_send_message,
            alias_events,
            alias_internal_screen,
            upload_file,
            WebhookController,
            receive_delivery,
            McpConfigurationController,
            test_configuration,
            call_tool,
            oauth_init,
            oauth_callback,
            oauth_callback_post,
            oauth_disconnect,
            mcp_gateway,
            export_user,
            erase_user,
            PromptController,
            query_audit,
            OrgController,
            chat,
            chat_stream,
            read_settings,
            write_settings,
            list_agents,
            root,
            console_page,
            console_assets,
            console_login,
        ],
        middleware=[
            edge_middleware,
            address_limit_middleware,
            auth_middleware(),
            after_auth_middleware,
        ],
        exception_handlers=make_exception_handlers(),
        request_max_body_size=settings.max_request_body_bytes,
        lifespan=[lifespan(settings), gateway_lifespan, drain_on_signals],
        openapi_config=OpenAPIConfig(
            title="agentapi",
            version=VERSION,
            path="/schema",
            components=[openapi_components()],
            security=openapi_security(),
            render_plugins=[SwaggerRenderPlugin()],
        ),
        debug=False,
        # Logging is configured by configure_process (JSON or text, redacted); Litestar must not replace it.
        logging_config=None,
    )
    _document_problems(app)
    app_ref.append(app)
    return app


def serving_app() -> Litestar:
    """The app as ``agentapi serve`` runs it, in each of its processes (uvicorn's factory)."""
    settings = get_settings()
    app = create_app(settings)
    tune_gc(settings)
    return app


# Every API route may answer these as problem+json; Litestar documents responses per handler only.
COMMON_PROBLEMS = (400, 401, 403, 404, 409, 413, 415, 422, 429, 431, 503)


def _document_problems(app: Litestar) -> None:
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if handler.include_in_schema:
                handler.responses = {**problem_responses(*COMMON_PROBLEMS), **(handler.responses or {})}
