"""The port-less root-path alias of a session for published coder/agentapi clients: ``/status``,
``/messages``, ``/message``, ``/events`` and ``/internal/screen`` answer for the session a client
key names. The alias handlers live beside the ``/api/v1/sessions/{id}/…`` handlers they mirror and
share their code; what they share here is how the key's session is found."""

from __future__ import annotations

from typing import Any

from api.auth import CLIENT_KEY_ROUTE, AuthError, Principal, client_key_security
from api.problems import problem_responses
from api.state import Resources
from api.tenancy import tenant_context
from schemas.tables import UserSession
from services.sessions.input import refuse_if_over
from services.sessions.lookup import find_session

# The route options of every alias handler: only a client key reaches it, and the document says so.
ALIAS_OPT: dict[str, Any] = {CLIENT_KEY_ROUTE: True}
ALIAS_SECURITY = client_key_security()
ALIAS_TAGS = ["agentapi alias"]
# Every alias call answers 410 once the key's session is over (keyed_session).
ALIAS_RESPONSES = problem_responses(410)


async def keyed_session(res: Resources, principal: Principal) -> UserSession:
    """The session the caller's client key names, while it lives: once it has ended the key's
    calls get the 410 its session's message calls get, since nothing it asks can reach an agent."""
    if principal.key_session_id is None:  # the auth middleware lets only keys through
        raise AuthError("this path takes a session client key")
    row = await find_session(res, tenant_context(principal), principal.key_session_id)
    refuse_if_over(row)
    return row
