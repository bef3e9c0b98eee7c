"""The ``agentapi`` command: serve, worker, migrate, token, dev."""

from __future__ import annotations

import argparse
import asyncio
import sys
from uuid import UUID

from events.streams import WorkKind
from schemas.roles import ORG_ROLES
from schemas.settings import get_settings

ALL_QUEUES = [kind.value for kind in WorkKind]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    # Each process builds its own app (connections, caches, the event hub); with --workers N
    # uvicorn binds the port once and supervises N of them, restarting one that dies.
    uvicorn.run(
        "api.app:serving_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers or settings.serve_workers,
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        # Uvicorn's own loggers go through the root handlers configured by create_app (JSON, redacted).
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from workers.main import run_worker

    run_worker(get_settings(), queues=args.queues, threads=args.threads)
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from schemas.migrate import upgrade

    asyncio.run(upgrade(get_settings()))
    print("agentapi: database is at the latest revision")
    return 0


def _token(args: argparse.Namespace) -> int:
    from api.tokens import mint_token

    settings = get_settings()
    if settings.jwt_secret is None:
        print(
            "agentapi: token needs AGENTAPI_JWT_SECRET (tokens from a JWKS issuer come from it)",
            file=sys.stderr,
        )
        return 2
    print(
        mint_token(
            settings.jwt_secret.get_secret_value(),
            user_id=args.user,
            org_id=args.org,
            role=args.role,
            audience=settings.jwt_audience,
            ttl_seconds=args.ttl,
            email=args.email,
            superadmin=args.superadmin,
        )
    )
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from schemas.crypto import KeyRing

    print(f"{args.key_id}:{KeyRing.generate_key()}")
    return 0


def _keys_rotate(_: argparse.Namespace) -> int:
    from schemas.db import dispose_engine, open_engine
    from services.key_rotation import rotate_all

    settings = get_settings()

    async def rotate() -> int:
        engine = open_engine(settings, pool_size=2)
        try:
            report = await rotate_all(engine, settings.key_ring())
        finally:
            await dispose_engine(engine)
        for column, count in report.rotated.items():
            print(f"{column}: {count} re-encrypted")
        for failure in report.failed:
            print(f"agentapi: cannot rotate {failure}", file=sys.stderr)
        if report.remaining:
            print(f"agentapi: {report.remaining} secrets still under an old key; run again", file=sys.stderr)
            return 1
        print(f"agentapi: every secret is sealed under key {settings.key_ring().primary_id!r}")
        return 0

    return asyncio.run(rotate())


def _audit_verify(args: argparse.Namespace) -> int:
    from schemas.audit_chain import verify
    from schemas.db import dispose_engine, open_engine

    settings = get_settings()

    async def run() -> int:
        engine = open_engine(settings, pool_size=2)
        try:
            checked, breaks = await verify(engine, args.org)
        finally:
            await dispose_engine(engine)
        for found in breaks:
            print(
                f"agentapi: audit chain of org {found.org_id} breaks at row {found.row_id} (seq {found.seq}):"
                f" {found.reason}"
            )
        if breaks:
            return 1
        print(f"agentapi: {checked} audit rows verified, every chain intact")
        return 0

    return asyncio.run(run())


def _retention(_: argparse.Namespace) -> int:
    from schemas.db import dispose_engine, open_engine
    from services.retention import purge_expired
    from services.workspace_store import open_store

    settings = get_settings()
    store = open_store(settings.workspace_store_url) if settings.workspace_store_url else None

    async def run() -> dict[str, int]:
        engine = open_engine(settings, pool_size=2)
        try:
            return await purge_expired(engine, store=store)
        finally:
            await dispose_engine(engine)

    deleted = asyncio.run(run())
    for org_id, count in deleted.items():
        print(f"org {org_id}: {count} expired sessions deleted")
    print(f"agentapi: retention applied to {len(deleted)} organizations")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from api.dev import run_dev

    return run_dev(host=args.host, port=args.port, data_dir=args.data_dir)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentapi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP ingress")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=_positive,
        help="processes serving the port (default: AGENTAPI_WORKERS, else 1)",
    )
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="run worker pools")
    worker.add_argument("--queues", nargs="+", choices=ALL_QUEUES, default=ALL_QUEUES)
    worker.add_argument("--threads", type=int, default=8)
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser("migrate", help="apply database migrations (as the owner)")
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="mint an HS256 access token")
    token.add_argument("--user", type=UUID, required=True)
    token.add_argument("--org", type=UUID)
    token.add_argument("--role", choices=ORG_ROLES, default="member")
    token.add_argument("--email")
    token.add_argument("--superadmin", action="store_true")
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(run=_token)

    keys = commands.add_parser("keys", help="encryption keys for secrets at rest")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = key_commands.add_parser("generate", help="print a new key ring entry (key_id:base64key)")
    generate.add_argument("--key-id", default="k1")
    generate.set_defaults(run=_keys_generate)
    rotate = key_commands.add_parser(
        "rotate", help="re-encrypt every stored secret under the first key (resumable)"
    )
    rotate.set_defaults(run=_keys_rotate)

    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check each org's hash chain; names the first broken row"
    )
    verify.add_argument("--org", type=UUID)
    verify.set_defaults(run=_audit_verify)

    retention = commands.add_parser("retention", help="data retention")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    retention_run = retention_commands.add_parser(
        "run", help="delete finished sessions older than each org's retention_days (schedule it daily)"
    )
    retention_run.set_defaults(run=_retention)

    dev = commands.add_parser("dev", help="everything in one process group on embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--data-dir", default=".agentapi")
    dev.set_defaults(run=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
