"""A worker imports the actor modules of its own queues only: a sessions worker started without the
tools pool's MCP client (~1.4 s of its start-up); every routed event type has its actor's place."""

from __future__ import annotations

import json
import subprocess
import sys

from events.streams import WORK_ROUTES, WorkKind
from tests.fixtures.stack import REPO
from workers.actors import ACTORS

PROBE = """
import json, sys
from events.streams import WorkKind
from schemas.settings import Settings
from workers.broker import make_broker
from workers.context import WorkerContext, set_context
settings = Settings(
    database_url="postgresql+asyncpg://nobody@127.0.0.1/none", environment="test", jwt_secret="probe"
)
make_broker(settings)
set_context(WorkerContext(settings))
from workers.actors import load_actors
actors = load_actors([WorkKind(k) for k in sys.argv[1:]])
print(json.dumps({
    "actors": {str(t): a.actor_name for t, a in actors.items()},
    "tools imported": "workers.mcp_client" in sys.modules,
}))
"""


def test_a_sessions_worker_imports_no_other_pools_actors() -> None:
    # In a fresh interpreter: imports are per process.
    done = subprocess.run(
        [sys.executable, "-c", PROBE, WorkKind.SESSIONS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "actors": {"session.requested": "run_session"},
        "tools imported": False,
    }


def test_every_routed_event_type_has_an_actor() -> None:
    assert set(ACTORS) == {t for t, kind in WORK_ROUTES.items() if kind is not WorkKind.AUDIT}
