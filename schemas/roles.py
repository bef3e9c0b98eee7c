"""Role names, the one place they are spelled: an organization role lives on a membership (and may
come from a token), ``superadmin`` is a platform role only a token's ``app_metadata`` grants."""

from __future__ import annotations

from typing import Literal, get_args

OrgRole = Literal["member", "admin", "owner"]
# Least to most privileged.
ORG_ROLES: tuple[str, ...] = get_args(OrgRole)
ROLE_RANK = {role: rank for rank, role in enumerate(ORG_ROLES)}
SUPERADMIN = "superadmin"
ROLES = (*ORG_ROLES, SUPERADMIN)
# Roles that administer an organization.
ADMIN_ROLES = frozenset({"admin", "owner", SUPERADMIN})
