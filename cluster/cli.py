"""The `ticketing` command line: up, down, token, migrate, status, slots, verify."""

from __future__ import annotations

import argparse
import asyncio
import json
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
                         shard_count=args.shards, demo=True if args.demo else None)
    return run_up(settings, demo=args.demo, prometheus=args.prometheus)


def cmd_down(args: argparse.Namespace) -> int:
    from cluster.cleanup import running_supervisor, stop_deployment

    data_dir = _settings(args).resolved_data_dir
    pid = running_supervisor(data_dir)
    if pid is not None:
        print(f"stopping the deployment in {data_dir} (supervisor pid {pid}) …", flush=True)
    report = stop_deployment(data_dir)
    names = ", ".join(component.describe() for component in report.stopped)
    if report.supervisor_pid is not None:
        print(f"stopped in {report.elapsed_s:.1f} s: supervisor (pid {report.supervisor_pid})"
              + (f", {names}" if names else ""))
    if report.removed:
        print(f"removed {report.removed} leftover processes" + (f": {names}" if pid is None and names else ""))
    elif pid is None:
        print(f"nothing running in {data_dir}")
    if report.left:
        print("still running: " + ", ".join(component.describe() for component in report.left), file=sys.stderr)
        return 1
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
    from cluster.embedded import embedded_dsns, embedded_servers
    from cluster.supervisor import shard_database

    if settings.pg_dsns:
        return list(settings.pg_dsns), None
    state = runstate.read_state(settings.resolved_data_dir)
    if state.get("pg_dsns"):
        return list(state["pg_dsns"]), None
    servers = embedded_servers(settings.resolved_data_dir, settings.pg_embedded_servers)
    for server in servers:
        server.start()
    return embedded_dsns(servers, settings.shard_count, shard_database), servers


def cmd_migrate(args: argparse.Namespace) -> int:
    from shards.migrate import migrate_all

    settings = _settings(args)
    dsns, started = _dsns_for(settings)
    try:
        applied = asyncio.run(migrate_all(dsns, timeout_s=settings.db_call_timeout_s * 10))
    finally:
        for server in started or ():
            server.stop()
    for dsn, names in applied.items():
        print(f"{dsn.rsplit('/', 1)[-1]}: {', '.join(names) if names else 'up to date'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cluster.status import collect_status, format_status

    status = collect_status(_settings(args))
    print(json.dumps(status, default=str, indent=2) if args.json else format_status(status))
    return 0 if status["healthy"] else 1


def _deployment(settings: Settings) -> tuple[list[str], str]:
    """The shard DSNs and Ray address of the running deployment (slot moves need both)."""
    from cluster import runstate

    state = runstate.read_state(settings.resolved_data_dir)
    dsns = list(settings.pg_dsns) or list(state.get("pg_dsns", []))
    address = settings.ray_address or state.get("ray_address", "")
    if not dsns or not address:
        raise ValueError(f"no running deployment in {settings.resolved_data_dir} (start it with `ticketing up`)")
    return dsns, address


def cmd_slots_show(args: argparse.Namespace) -> int:
    from cluster.slot_move import read_ownership, slot_ranges
    from shards.slot_moves import owners_of

    dsns, _ = _deployment(_settings(args))
    rows = asyncio.run(read_ownership(dsns))
    owners, version = owners_of(rows)
    print(f"shard map version {version}")
    for shard_id, shard_rows in rows.items():
        by_state = {state: [row.slot for row in shard_rows if row.state == state] for state in ("owned", "fenced")}
        fenced = f"  fenced {slot_ranges(by_state['fenced'])}" if by_state["fenced"] else ""
        print(f"shard {shard_id}: owns {slot_ranges(by_state['owned'])}{fenced}")
    unowned = [slot for slot in range(256) if slot not in owners]
    if unowned:
        print(f"served by nobody (a move under way: run it again to finish): {slot_ranges(unowned)}")
    return 0


def cmd_slots_move(args: argparse.Namespace) -> int:
    import logging

    import ray

    from cluster.raycluster import prepare_local_ray_environment
    from cluster.slot_move import move_slots, parse_slot_range, ray_caller

    settings = _settings(args)
    slots = parse_slot_range(args.range)
    dsns, address = _deployment(settings)
    prepare_local_ray_environment()
    ray.init(address=address, namespace="ticketing", logging_level=logging.ERROR, log_to_driver=False)
    try:
        report = asyncio.run(move_slots(dsns, slots, args.to, ray_caller(settings.startup_timeout_s)))
    finally:
        ray.shutdown()
    print(report.describe())
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ticketing")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-dir", type=Path, default=None, help="deployment data folder (default .data)")
        sub.set_defaults(handler=handler)
        return sub

    up = add("up", cmd_up, "run the whole cluster in the foreground; Ctrl-C stops everything it started")
    up.add_argument("--host", default=None, help="router listen address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="router listen port (default 8000)")
    up.add_argument("--workers", type=int, default=None, help="router worker processes (default 2)")
    up.add_argument("--shards", type=int, default=None, help="shard count (default 4)")
    up.add_argument("--demo", action="store_true", help="create a demo event on sale")
    up.add_argument("--prometheus", action="store_true",
                    help="also run Prometheus (when installed) on <data-dir>/observability/prometheus.yml "
                         "and print its URL")

    add("down", cmd_down, "stop a running deployment and wait until it stopped, or remove what a crashed run "
                          "left behind")

    token = add("token", cmd_token, "print a JWT valid for this deployment")
    token.add_argument("--sub", required=True, help="user id (with --count: the prefix)")
    token.add_argument("--role", required=True, choices=["buyer", "organizer", "validator", "admin"],
                       help="what the token may do")
    token.add_argument("--ttl-s", type=int, default=None, help="lifetime in seconds")
    token.add_argument("--count", type=int, default=None, help="print N tokens for SUB-0 … SUB-(N-1)")
    token.add_argument("--event", type=UUID, action="append", default=None, metavar="ID",
                       help="validator only: an event whose tickets the token may check in (repeatable); "
                            "a validator token without --event checks in nothing")

    add("migrate", cmd_migrate, "apply the SQL migrations to every shard database")
    status = add("status", cmd_status, "shards (events, epoch, last commit, commit queue, Ray node), actors, "
                                       "databases and Redis of a deployment")
    status.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")
    slots = add("slots", cmd_slots_show, "the shard map as the shard databases record it: which shard owns which "
                                         "slots, and moves under way")
    slot_commands = slots.add_subparsers(dest="slots_command", metavar="SUBCOMMAND")
    move = slot_commands.add_parser(
        "move", help="move a slot range to another shard while the cluster serves (run again to finish an "
                     "interrupted move)",
        description="Fence the slots on their shard, copy their events' rows to the target shard's database, "
                    "clear the source, and let the target serve them (docs/operations.md \"Moving slots\").")
    move.add_argument("range", metavar="FIRST-LAST", help="the slots to move, e.g. 0-15 (all on one shard)")
    move.add_argument("--to", type=int, required=True, metavar="K", help="the shard that will serve them")
    move.add_argument("--data-dir", type=Path, default=None, help="deployment data folder (default .data)")
    move.set_defaults(handler=cmd_slots_move)
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
