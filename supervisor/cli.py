"""The `cloaca-sandbox` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import grpc

from supervisor.api import supervisor_pb2 as pb
from supervisor.build import build_package
from supervisor.discovery import DEFAULT_IMPORT_TIMEOUT, Discovery
from supervisor.errors import DiscoveryError, PackageError
from supervisor.inspection import PackageSummary, inspect_archive
from supervisor.manifest import Manifest

from supervisor.options import Options, OptionsError, add_option_flags, load_options
from supervisor.service_config import ClientConfig, ServiceConfig, default_data_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _options(model: type[Options], args: argparse.Namespace) -> Any:
    """The command's options from its flags, the environment and the config file; OptionsError if bad."""
    return load_options(model, vars(args))


def _report_options_error(error: OptionsError) -> int:
    for line in error.lines:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_USAGE


def _print_package(summary: PackageSummary, discovery: Discovery, warnings: list[str]) -> None:
    print(f"{summary.name} {summary.version}")
    if summary.description:
        print(f"  {summary.description}")
    print(f"  format:          {summary.format}")
    print(f"  entry module:    {summary.entry_module}")
    print(f"  workflow name:   {summary.workflow_name}  (of its module-level tasks)")
    print(f"  requires python: {summary.requires_python or '-'}")
    if summary.fingerprint:
        print(f"  fingerprint:     {summary.fingerprint}")
    if isinstance(summary.manifest, Manifest):
        print(f"  targets:         {', '.join(summary.manifest.package.targets) or '-'}")
    for workflow in discovery.workflows:
        print(f"  workflow {workflow.name}" + (f": {workflow.description}" if workflow.description else ""))
        for name, param in workflow.params.items():
            default = f" = {json.dumps(param['default'])}" if "default" in param else " (required)"
            print(f"    param {name}: {param['type']}{default}")
        for task_id in workflow.tasks:
            task = discovery.task(task_id)
            assert task is not None
            deps = f" <- {', '.join(task.dependencies)}" if task.dependencies else ""
            kind = "async " if task.is_async else ""
            print(f"    {kind}{task.id}{deps}   ({task.function})")
    if discovery.secrets:
        print(f"  secrets: {', '.join(discovery.secrets)}")
    for trig in discovery.triggers:
        print(f"  trigger {trig.name} -> {trig.workflow} ({trig.function}; {_trigger_when(trig.options)})")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _trigger_when(options: dict[str, Any]) -> str:
    if options.get("cron"):
        return f"cron {options['cron']!r} {options.get('timezone') or 'UTC'}"
    return f"polled every {options.get('poll_interval') or '30s'}"


def _report_error(error: PackageError, as_json: bool) -> int:
    trace = error.traceback if isinstance(error, DiscoveryError) else ""
    if as_json:
        print(json.dumps({"ok": False, "error": {"code": error.code, "message": str(error), "traceback": trace}}))
    else:
        if trace:
            print(trace.rstrip(), file=sys.stderr)
        print(f"error [{error.code}]: {error}", file=sys.stderr)
    return EXIT_FAILED


def command_package(args: argparse.Namespace) -> int:
    try:
        output, manifest, discovery = build_package(Path(args.project_dir), args.output and Path(args.output),
                                                    args.import_timeout)
    except PackageError as error:
        return _report_error(error, args.json)
    summary = PackageSummary.of_manifest(manifest)
    if args.json:
        print(json.dumps({"ok": True, "archive": str(output), "format": summary.format,
                          "manifest": manifest.model_dump(mode="json", exclude_none=True)}))
    else:
        _print_package(summary, discovery, [])
        print(f"wrote {output}")
    return EXIT_OK


def command_inspect(args: argparse.Namespace) -> int:
    if not Path(args.archive).is_file():
        print(f"error: {args.archive} is not a file", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = inspect_archive(args.archive, args.import_timeout)
    except PackageError as error:
        return _report_error(error, args.json)
    if args.json:
        print(json.dumps({
            "ok": True,
            "format": report.summary.format,
            "workflow_name": report.summary.workflow_name,
            "manifest": report.summary.manifest_dict(),
            "fingerprint": report.fingerprint,
            "discovery": report.discovery.model_dump(mode="json"),
            "warnings": report.warnings,
        }, indent=2))
    else:
        _print_package(report.summary, report.discovery, report.warnings)
    return EXIT_OK


# --- serve ---------------------------------------------------------------------------

def command_serve(args: argparse.Namespace) -> int:
    from supervisor.edge.server import ConfigError, SupervisorServer
    from supervisor.log_format import configure_logging

    try:
        config = _options(ServiceConfig, args)
    except OptionsError as error:
        return _report_options_error(error)
    configure_logging(config.log_level, config.log_format)
    try:
        server = SupervisorServer(config)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(server, config, config.grace))


async def _serve(server: Any, config: Any, grace: float) -> int:
    from supervisor.registry import RegistryUnavailable
    from supervisor.registry.local import RegistryCorrupted
    from supervisor.edge.server import ConfigError
    from supervisor.instance_lock import DataDirInUse
    from supervisor.sandboxes.isolation import IsolationUnavailable
    from supervisor.secrets import SecretsFileError
    from supervisor.variables import VariablesFileError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except (ConfigError, DataDirInUse, RegistryCorrupted, RegistryUnavailable, IsolationUnavailable,
            SecretsFileError, VariablesFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        await server.stop(0)
        return EXIT_USAGE
    print(f"cloaca-sandbox serving on {config.listen} (data in {config.data_dir})", flush=True)
    await stop.wait()
    logging.getLogger(__name__).info("shutting down: finishing calls under way (up to %gs)", grace)
    await server.stop(grace)
    return EXIT_OK


def command_rebuild_index(args: argparse.Namespace) -> int:
    from supervisor.instance_lock import DataDirInUse
    from supervisor.registry_rebuild import rebuild_registry

    try:
        config = _options(ServiceConfig, args)
    except OptionsError as error:
        return _report_options_error(error)
    if not (config.data_dir / "archives").is_dir():
        print(f"error: {config.data_dir} holds no stored archives (is it the service's --data-dir?)", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = rebuild_registry(config.data_dir)
    except DataDirInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if report.damaged_copy is not None:
        print(f"kept the old registry as {report.damaged_copy}")
    for line in report.loaded:
        print(f"indexed {line}")
    for line in report.superseded:
        print(f"removed {line}: a newer archive of the same package was stored after it")
    for line in report.quarantined:
        print(f"quarantined {line}", file=sys.stderr)
    print(f"the registry holds {len(report.loaded)} loaded package(s); start the service again")
    return EXIT_OK


# --- client commands -------------------------------------------------------------------

def _client(config: ClientConfig) -> Any:
    from supervisor.client import SupervisorClient

    return SupervisorClient(config.server, config.api_key, config.tls_ca)


def _read_context(raw: str | None) -> bytes:
    if raw is None:
        return b"{}"
    text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--context is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--context must be a JSON object")
    return text.encode()


def _error_dict(error: Any) -> dict[str, Any] | None:
    if not error.kind and not error.type:
        return None
    return {"kind": error.kind, "type": error.type, "message": error.message, "traceback": error.traceback,
            "frames": [{"file": f.file, "line": f.line, "function": f.function} for f in error.frames]}


def _status(value: int) -> str:
    return pb.Status.Name(value).lower()


def _package_dict(package: Any) -> dict[str, Any]:
    return {"name": package.name, "version": package.version, "state": pb.Package.State.Name(package.state).lower(),
            "error": package.error or None, "source": package.source, "pid": package.pid or None,
            "restarts": package.restarts, "memory_bytes": package.memory_bytes, "fingerprint": package.fingerprint,
            "isolation": dict(sorted(package.isolation.items())), "memory_peak_bytes": package.memory_peak_bytes,
            "restart_causes": dict(package.restart_causes), "sandbox_state": package.sandbox_state,
            "limits": _limits_dict(package.limits) if package.HasField("limits") else None,
            "tasks": [_task_dict(task) for task in package.tasks],
            "workflows": [{"name": w.name, "description": w.description, "tasks": list(w.tasks)}
                          for w in package.workflows]}


def _limits_dict(limits: Any) -> dict[str, Any]:
    return {"import_timeout_seconds": limits.import_timeout_seconds, "call_timeout_seconds": limits.call_timeout_seconds,
            "memory_limit_mib": limits.memory_limit_mib, "max_concurrency": limits.max_concurrency,
            "max_queue": limits.max_queue, "scratch_mib": limits.scratch_mib, "max_processes": limits.max_processes,
            "network": limits.network}


def _task_dict(task: Any) -> dict[str, Any]:
    return {"id": task.id, "function": task.function, "dependencies": list(task.dependencies),
            "is_async": task.is_async, "workflow": task.workflow, "docstring": task.docstring}


def _call_dict(response: Any) -> dict[str, Any]:
    return {"status": _status(response.status),
            "context": json.loads(response.context_json) if response.context_json else None,
            "error": _error_dict(response.error),
            "output": {"stdout": response.output.stdout, "stderr": response.output.stderr,
                       "stdout_dropped_bytes": response.output.stdout_dropped_bytes,
                       "stderr_dropped_bytes": response.output.stderr_dropped_bytes},
            "duration_ms": round(response.duration_ms, 3)}


def _run_dict(response: Any) -> dict[str, Any]:
    return {"status": _status(response.status), "workflow": response.workflow,
            "context": json.loads(response.final_context_json) if response.final_context_json else None,
            "tasks": [{"task_id": o.task_id, "status": _status(o.status), "attempts": o.attempts,
                       "duration_ms": round(o.duration_ms, 3), "error": _error_dict(o.error),
                       "skip_reason": o.skip_reason or None} for o in response.tasks],
            "duration_ms": round(response.duration_ms, 3)}


def _print_failure(error: dict[str, Any] | None) -> None:
    if error is None:
        return
    if error["traceback"]:
        print(error["traceback"].rstrip(), file=sys.stderr)
    else:
        print(f"{error['type']}: {error['message']} [{error['kind']}]", file=sys.stderr)


def _print_output(output: dict[str, Any]) -> None:
    for stream in ("stdout", "stderr"):
        if output[stream]:
            dropped = output[f"{stream}_dropped_bytes"]
            cut = f" (truncated: its first {dropped} bytes were dropped)" if dropped else ""
            print(f"--- {stream}{cut} ---", file=sys.stderr)
            if dropped:
                print(f"[... {dropped} bytes dropped ...]", file=sys.stderr)
            print(output[stream].rstrip("\n"), file=sys.stderr)


def command_client(args: argparse.Namespace) -> int:
    try:
        config = _options(ClientConfig, args)
    except OptionsError as error:
        return _report_options_error(error)
    try:
        with _client(config) as client:
            return args.client_handler(client, args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {exc.filename}: {exc.strerror}" if exc.filename else f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def client_upload(client: Any, args: argparse.Namespace) -> int:
    package = _package_dict(client.upload(Path(args.archive)))
    if args.json:
        print(json.dumps(package))
    else:
        print(f"uploaded {package['name']} {package['version']}: {package['state']}, "
              f"tasks {', '.join(t['id'] for t in package['tasks'])}")
    return EXIT_OK


def client_list(client: Any, args: argparse.Namespace) -> int:
    packages = [_package_dict(package) for package in client.list()]
    if args.json:
        print(json.dumps(packages))
        return EXIT_OK
    if not packages:
        print("no packages")
    for package in packages:
        line = f"{package['name']:<24} {package['version']:<10} {package['state']:<8} {len(package['tasks'])} tasks"
        if package["pid"]:
            line += f"  pid {package['pid']}  restarts {package['restarts']}  {package['memory_bytes'] / 2**20:.1f} MiB"
        print(line + (f"  error: {package['error']}" if package["error"] else ""))
    return EXIT_OK


def client_tasks(client: Any, args: argparse.Namespace) -> int:
    response = client.tasks(args.package)
    tasks = [_task_dict(task) for task in response.tasks]
    if args.json:
        print(json.dumps({"tasks": tasks, "workflows": [{"name": w.name, "tasks": list(w.tasks)}
                                                        for w in response.workflows]}))
        return EXIT_OK
    for workflow in response.workflows:
        print(f"workflow {workflow.name}" + (f": {workflow.description}" if workflow.description else ""))
        for task in (t for t in tasks if t["id"] in workflow.tasks):
            deps = f" <- {', '.join(task['dependencies'])}" if task["dependencies"] else ""
            print(f"  {'async ' if task['is_async'] else ''}{task['id']}{deps}")
    return EXIT_OK


def client_call(client: Any, args: argparse.Namespace) -> int:
    result = _call_dict(client.call(args.package, args.task, _read_context(args.context), args.timeout))
    if args.json:
        print(json.dumps(result))
    else:
        _print_output(result["output"])
        if result["status"] == "completed":
            print(json.dumps(result["context"], indent=2))
        else:
            _print_failure(result["error"])
    return EXIT_OK if result["status"] == "completed" else EXIT_FAILED


def client_run(client: Any, args: argparse.Namespace) -> int:
    result = _run_dict(client.run(args.package, args.workflow, _read_context(args.context)))
    if args.json:
        print(json.dumps(result))
    else:
        for task in result["tasks"]:
            note = f" ({task['skip_reason']})" if task["skip_reason"] else ""
            print(f"{task['task_id']:<24} {task['status']:<10} attempts {task['attempts']}  "
                  f"{task['duration_ms']:.1f} ms{note}", file=sys.stderr)
        for task in result["tasks"]:
            _print_failure(task["error"])
        print(json.dumps(result["context"], indent=2))
    return EXIT_OK if result["status"] == "completed" else EXIT_FAILED


def _moment(seconds: float) -> str | None:
    """Seconds since the epoch as an RFC 3339 UTC time; None for 0 (never, or not planned)."""
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _schedule_dict(schedule: Any) -> dict[str, Any]:
    cron = schedule.kind == pb.Schedule.CRON
    return {"id": schedule.id, "package": schedule.package, "trigger": schedule.trigger,
            "workflow": schedule.workflow, "kind": "cron" if cron else "poll",
            "cron": schedule.cron if cron else None, "timezone": schedule.timezone if cron else None,
            "poll_interval_ms": None if cron else schedule.poll_interval_ms,
            "allow_concurrent": schedule.allow_concurrent, "enabled": schedule.enabled,
            "next_fire_at": _moment(schedule.next_fire_at), "last_fire_at": _moment(schedule.last_fire_at),
            "last_poll_at": None if cron else _moment(schedule.last_poll_at), "running": schedule.running,
            "catchup_policy": schedule.catchup_policy}


def _schedule_run_dict(run: Any) -> dict[str, Any]:
    return {"id": run.id, "schedule_id": run.schedule_id, "outcome": run.outcome,
            "scheduled_at": _moment(run.scheduled_at), "started_at": _moment(run.started_at),
            "finished_at": _moment(run.finished_at), "run_id": run.run_id or None, "error": run.error or None,
            "context_hash": run.context_hash or None}


def _workflow_run_dict(run: Any) -> dict[str, Any]:
    return {"run_id": run.run_id, "package": run.package, "workflow": run.workflow, "origin": run.origin,
            "status": run.status, "started_at": _moment(run.started_at), "finished_at": _moment(run.finished_at),
            "duration_ms": round(run.duration_ms, 3) if run.finished_at else None, "error": run.error or None}


def _schedule_id(client: Any, given: str) -> str:
    """A schedule id, or a unique prefix of one of yours (as `schedules` prints them)."""
    matches = [s.id for s in client.schedules() if s.id.startswith(given)] if given else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"{given!r} starts {len(matches)} schedule ids: give more of it")
    return given  # the server says it is unknown


def client_schedules(client: Any, args: argparse.Namespace) -> int:
    schedules = [_schedule_dict(s) for s in client.schedules(args.package)]
    if args.json:
        print(json.dumps(schedules))
        return EXIT_OK
    if not schedules:
        print("no schedules")
    for s in schedules:
        when = f"cron {s['cron']!r} {s['timezone']}" if s["kind"] == "cron" else f"poll every {s['poll_interval_ms']} ms"
        state = f"next {s['next_fire_at']}" if s["enabled"] else "paused"
        running = f"  {s['running']} running" if s["running"] else ""
        print(f"{s['id'][:8]}  {s['package']}/{s['trigger']} -> {s['workflow']}  {when}  {state}{running}")
    return EXIT_OK


def client_pause(client: Any, args: argparse.Namespace) -> int:
    schedule = _schedule_dict(client.pause_schedule(_schedule_id(client, args.schedule)))
    print(json.dumps(schedule) if args.json else f"paused {schedule['package']}/{schedule['trigger']}")
    return EXIT_OK


def client_resume(client: Any, args: argparse.Namespace) -> int:
    schedule = _schedule_dict(client.resume_schedule(_schedule_id(client, args.schedule)))
    print(json.dumps(schedule) if args.json else
          f"resumed {schedule['package']}/{schedule['trigger']}: next fire {schedule['next_fire_at']}")
    return EXIT_OK


def client_schedule_runs(client: Any, args: argparse.Namespace) -> int:
    runs = [_schedule_run_dict(r) for r in client.schedule_runs(_schedule_id(client, args.schedule), args.limit)]
    if args.json:
        print(json.dumps(runs))
        return EXIT_OK
    if not runs:
        print("no runs yet")
    for run in runs:
        error = f"  {run['error']}" if run["error"] else ""
        print(f"{run['scheduled_at']}  {run['outcome']:<10} run {run['run_id'] or '-'}{error}")
    return EXIT_OK


def client_runs(client: Any, args: argparse.Namespace) -> int:
    runs = [_workflow_run_dict(r) for r in client.runs(args.package, args.limit)]
    if args.json:
        print(json.dumps(runs))
        return EXIT_OK
    if not runs:
        print("no workflow runs")
    for run in runs:
        took = f"{run['duration_ms']:.1f} ms" if run["duration_ms"] is not None else "-"
        error = f"  {run['error']}" if run["error"] else ""
        print(f"{run['started_at']}  {run['package']}/{run['workflow']:<20} {run['status']:<10} {took:>10}  "
              f"{run['origin']}{error}")
def _log_entry_dict(entry: Any) -> dict[str, Any]:
    kind = "output" if entry.kind == pb.PackageLogEntry.OUTPUT else "event"
    data = {"seq": entry.seq, "time": entry.time, "kind": kind, "version": entry.version,
            "incarnation": entry.incarnation, "text": entry.text}
    if kind == "event":
        data.update(event=entry.event, cause=entry.cause or None, pid=entry.pid or None,
                    memory_peak_bytes=entry.memory_peak_bytes or None)
    return data


def _clock(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _print_log_entry(entry: dict[str, Any]) -> None:
    where = f"{_clock(entry['time'])} {entry['version']}#{entry['incarnation']}"
    if entry["kind"] == "event":
        print(f"{where} ** {entry['text']}", flush=True)
        return
    for line in entry["text"].rstrip("\n").split("\n"):
        print(f"{where} | {line}", flush=True)


def client_logs(client: Any, args: argparse.Namespace) -> int:
    try:
        for entry in client.logs(args.package, follow=args.follow):
            data = _log_entry_dict(entry)
            if args.json:
                print(json.dumps(data), flush=True)
            else:
                _print_log_entry(data)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def client_describe(client: Any, args: argparse.Namespace) -> int:
    package = client.get(args.package)
    details = _package_dict(package)
    details["events"] = [_log_entry_dict(entry) for entry in client.logs(args.package)
                         if entry.kind == pb.PackageLogEntry.EVENT]
    if args.json:
        print(json.dumps(details))
        return EXIT_OK
    mib = 2 ** 20
    print(f"{details['name']} {details['version']}")
    sandbox = f" (sandbox {details['sandbox_state']})" if details["sandbox_state"] else ""
    print(f"  state:        {details['state']}{sandbox}" + (f", pid {details['pid']}" if details["pid"] else ""))
    if details["error"]:
        print(f"  error:        {details['error']}")
    print(f"  source:       {details['source']}")
    if details["fingerprint"]:
        print(f"  fingerprint:  {details['fingerprint']}")
    causes = ", ".join(f"{cause} {count}" for cause, count in sorted(details["restart_causes"].items()))
    print(f"  restarts:     {details['restarts']}" + (f" ({causes})" if causes else ""))
    limits = details["limits"]
    if limits:
        limit = f"{limits['memory_limit_mib']} MiB" if limits["memory_limit_mib"] else "none"
        print(f"  memory:       {details['memory_bytes'] / mib:.1f} MiB now, "
              f"{details['memory_peak_bytes'] / mib:.1f} MiB peak; limit {limit}")
        print(f"  limits:       call timeout {limits['call_timeout_seconds']:g}s, import timeout "
              f"{limits['import_timeout_seconds']:g}s, {limits['max_concurrency']} calls at once, "
              f"{limits['max_queue']} waiting, scratch {limits['scratch_mib']} MiB, "
              f"{limits['max_processes']} processes, network {'on' if limits['network'] else 'off'}")
    if details["isolation"]:
        print("  isolation:")
        for layer, state in details["isolation"].items():
            print(f"    {layer + ':':<14}{state}")
    if details["tasks"]:
        print(f"  tasks:        {', '.join(task['id'] for task in details['tasks'])}")
    if details["events"]:
        print("  events (most recent last):")
        for event in details["events"][-20:]:
            print(f"    {_clock(event['time'])} {event['version']}#{event['incarnation']} {event['text']}")
    return EXIT_OK


def client_unload(client: Any, args: argparse.Namespace) -> int:
    client.unload(args.package)
    print(json.dumps({"unloaded": args.package}) if args.json else f"unloaded {args.package}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloaca-sandbox", description="Sandboxed hosting of Python workflow packages.")
    parser.add_argument("--version", action="version", version=f"cloaca-sandbox {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    package = commands.add_parser("package", help="build a .cloacina archive from a project directory "
                                  "(package.toml, or pyproject.toml with [tool.cloaca])")
    package.add_argument("project_dir")
    package.add_argument("-o", "--output", metavar="FILE",
                         help="archive path (default: PROJECT_DIR/dist/NAME-VERSION.cloacina)")
    package.set_defaults(handler=command_package)

    inspect = commands.add_parser("inspect", help="run every loader check on an archive and list its tasks")
    inspect.add_argument("archive")
    inspect.set_defaults(handler=command_inspect)

    for sub in (package, inspect):
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.add_argument("--import-timeout", type=float, default=DEFAULT_IMPORT_TIMEOUT, metavar="SECONDS",
                         help="how long importing the entry module may take (default: %(default)s)")

    serve = commands.add_parser("serve", help="run the service",
                                description="Run the service. Each option also reads CLOACA_SANDBOX_<OPTION> "
                                            "and the config file's [serve] table; a flag wins over both.")
    add_option_flags(serve, ServiceConfig)
    serve.set_defaults(handler=command_serve)

    rebuild = commands.add_parser(
        "rebuild-index", help="rebuild a damaged package registry from the stored archives",
        description="Rebuild DATA_DIR/registry.db from DATA_DIR/archives while the service is stopped; the old "
                    "file is kept beside it.")
    rebuild.add_argument("--data-dir", dest="data_dir", metavar="DIR", default=argparse.SUPPRESS,
                         help=f"the service's data dir (default: {default_data_dir()}; env CLOACA_SANDBOX_DATA_DIR)")
    rebuild.add_argument("--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS,
                         help="a config file whose [serve] table may give data_dir (default: none)")
    rebuild.set_defaults(handler=command_rebuild_index)

    def client_command(name: str, handler: Callable[[Any, argparse.Namespace], int], help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        add_option_flags(sub, ClientConfig)
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=command_client, client_handler=handler)
        return sub

    client_command("upload", client_upload, "upload a package archive").add_argument("archive")
    client_command("list", client_list, "list your packages")
    client_command("tasks", client_tasks, "list a package's tasks and workflows").add_argument("package")
    call = client_command("call", client_call, "call one task")
    call.add_argument("package")
    call.add_argument("task")
    call.add_argument("--context", metavar="JSON|@FILE", help="the task's input (default: {})")
    call.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="the call's time limit (default: the package's call timeout)")
    run = client_command("run", client_run, "run a workflow")
    run.add_argument("package")
    run.add_argument("workflow", nargs="?", help="(default: the package's only workflow)")
    run.add_argument("--context", metavar="JSON|@FILE", help="the workflow's input (default: {})")
    client_command("unload", client_unload, "unload a package").add_argument("package")
    runs = client_command("runs", client_runs, "list workflow runs, requested or scheduled, newest first")
    runs.add_argument("package", nargs="?")
    client_command("schedules", client_schedules, "list your packages' schedules (their @cloaca.trigger) "
                   "with their next fire").add_argument("package", nargs="?")
    client_command("pause", client_pause, "pause a schedule").add_argument("schedule", help="its id, or a prefix")
    client_command("resume", client_resume, "resume a paused schedule").add_argument("schedule",
                                                                                     help="its id, or a prefix")
    schedule_runs = client_command("schedule-runs", client_schedule_runs, "a schedule's fires and what came of them")
    schedule_runs.add_argument("schedule", help="its id, or a prefix")
    for listing in (runs, schedule_runs):
        listing.add_argument("--limit", type=int, default=20, metavar="N", help="newest N (default: %(default)s)")
    logs = client_command("logs", client_logs, "show a package's output outside calls and its lifecycle events")
    logs.add_argument("package")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new entries until Ctrl-C")
    client_command("describe", client_describe,
                   "show a package's state, version, restarts and why, memory, limits and isolation"
                   ).add_argument("package")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloaca-sandbox")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    # Warnings reach the user through each command's own report; serve raises the level.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
