"""Alembic, driven from code: ``agentapi migrate`` and the tests run migrations as the owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from schemas.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Escaped for configparser interpolation: passwords may contain '%'.
    config.set_main_option("sqlalchemy.url", settings.owner_database_url.replace("%", "%%"))
    config.attributes["settings"] = settings
    return config


async def upgrade(settings: Settings, revision: str = "head") -> None:
    # Alembic's env runs its own event loop; keep it off the caller's.
    await asyncio.to_thread(command.upgrade, alembic_config(settings), revision)


async def downgrade(settings: Settings, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(settings), revision)
