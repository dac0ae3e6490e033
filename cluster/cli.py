"""The `ticketing` command line: up, down, token, migrate, status."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from cluster.logs import configure_logging
from cluster.settings import Settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {key: value for key, value in extra.items() if value is not None}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


def cmd_up(args: argparse.Namespace) -> int:
    from cluster.supervisor import run_up

    settings = _settings(args, host=args.host, port=args.port, router_workers=args.workers,
                         shard_count=args.shards)
    return run_up(settings, demo=args.demo)


def cmd_down(args: argparse.Namespace) -> int:
    from cluster.cleanup import cleanup_crashed_run, running_supervisor

    data_dir = _settings(args).resolved_data_dir
    pid = running_supervisor(data_dir)
    if pid is not None:
        import os
        import signal

        print(f"stopping the running supervisor (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        return 0
    stopped = cleanup_crashed_run(data_dir)
    print(f"removed {stopped} leftover processes" if stopped else "nothing to remove")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from cluster.secrets import ensure_jwt_secret
    from router.auth import issue_token

    events = args.event or []
    if events and args.role != "validator":
        raise ValueError("--event scopes validator tokens; organizers check in their own events, admins any")
    settings = _settings(args)
    secret = settings.jwt_secret or ensure_jwt_secret(settings.resolved_data_dir)
    ttl_s = args.ttl_s or settings.jwt_ttl_s
    subjects = [args.sub] if args.count is None else [f"{args.sub}-{index}" for index in range(args.count)]
    lines = [issue_token(secret, subject, args.role, ttl_s, settings.jwt_algorithm, events=events)
             for subject in subjects]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _dsns_for(settings: Settings) -> tuple[list[str], Any]:
    """DSNs of the shard databases; starts the embedded Postgres when nothing runs (returned to stop)."""
    from cluster import runstate
    from cluster.embedded import EmbeddedPostgres
    from cluster.supervisor import shard_database

    if settings.pg_dsns:
        return list(settings.pg_dsns), None
    state = runstate.read_state(settings.resolved_data_dir)
    if state.get("pg_dsns"):
        return list(state["pg_dsns"]), None
    postgres = EmbeddedPostgres(settings.resolved_data_dir)
    postgres.start()
    return [postgres.dsn(shard_database(k)) for k in range(settings.shard_count)], postgres


def cmd_migrate(args: argparse.Namespace) -> int:
    from shards.migrate import migrate_all

    settings = _settings(args)
    dsns, started = _dsns_for(settings)
    try:
        applied = asyncio.run(migrate_all(dsns, timeout_s=settings.db_call_timeout_s * 10))
    finally:
        if started is not None:
            started.stop()
    for dsn, names in applied.items():
        print(f"{dsn.rsplit('/', 1)[-1]}: {', '.join(names) if names else 'up to date'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cluster.status import collect_status, format_status

    status = collect_status(_settings(args))
    print(format_status(status))
    return 0 if status["healthy"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-dir", type=Path, default=None, help="deployment data folder (default .data)")
        sub.set_defaults(handler=handler)
        return sub

    up = add("up", cmd_up, "run the whole cluster in the foreground; Ctrl-C stops everything it started")
    up.add_argument("--host", default=None)
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--workers", type=int, default=None, help="router worker processes")
    up.add_argument("--shards", type=int, default=None, help="shard count (default 4)")
    up.add_argument("--demo", action="store_true", help="create a demo event on sale")

    add("down", cmd_down, "stop a running deployment, or remove what a crashed run left behind")

    token = add("token", cmd_token, "print a JWT valid for this deployment")
    token.add_argument("--sub", required=True, help="user id (with --count: the prefix)")
    token.add_argument("--role", required=True, choices=["buyer", "organizer", "validator", "admin"])
    token.add_argument("--ttl-s", type=int, default=None, help="lifetime in seconds")
    token.add_argument("--count", type=int, default=None, help="print N tokens for SUB-0 … SUB-(N-1)")
    token.add_argument("--event", type=UUID, action="append", default=None, metavar="ID",
                       help="validator only: an event whose tickets the token may check in (repeatable); "
                            "a validator token without --event checks in nothing")

    add("migrate", cmd_migrate, "apply the SQL migrations to every shard database")
    add("status", cmd_status, "shards, actors, databases and Redis of a deployment")
    from cluster.verify import add_verify_parser

    add_verify_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("INFO", json_lines=args.command != "up")
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        return int(args.handler(args))
    except ValueError as error:  # inconsistent settings
        print(f"ticketing: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
