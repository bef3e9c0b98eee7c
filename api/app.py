"""The Litestar ingress: authenticate, authorize per tenant, validate, persist, publish."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from api.auth import auth_middleware, openapi_components, openapi_security
from api.correlation import correlation_middleware
from api.limits import json_content_type_middleware
from api.problems import make_exception_handlers
from api.routes.health import health, ready
from api.routes.mcp import McpConfigurationController, call_tool, test_configuration
from api.routes.sessions import SessionController
from api.state import lifespan
from schemas.observability import configure_process
from schemas.settings import Settings, get_settings

VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_process(settings, "ingress")
    return Litestar(
        route_handlers=[
            health,
            ready,
            SessionController,
            McpConfigurationController,
            test_configuration,
            call_tool,
        ],
        middleware=[correlation_middleware, auth_middleware(), json_content_type_middleware()],
        exception_handlers=make_exception_handlers(),
        request_max_body_size=settings.max_request_body_bytes,
        lifespan=[lifespan(settings)],
        openapi_config=OpenAPIConfig(
            title="agentapi",
            version=VERSION,
            path="/schema",
            components=[openapi_components()],
            security=openapi_security(),
            render_plugins=[SwaggerRenderPlugin()],
        ),
        debug=False,
    )
