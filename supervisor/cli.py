"""The `cloaca-sandbox` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import grpc

from supervisor.api import supervisor_pb2 as pb
from supervisor.build import build_package
from supervisor.discovery import DEFAULT_IMPORT_TIMEOUT, Discovery
from supervisor.errors import DiscoveryError, PackageError
from supervisor.inspection import PackageSummary, inspect_archive
from supervisor.manifest import Manifest

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_SERVER = "127.0.0.1:50051"


def _env(name: str, default: Any = None, kind: Callable[[str], Any] = str) -> Any:
    """A flag's default from CLOACA_SANDBOX_<NAME>, so every option can come from the environment."""
    value = os.environ.get(f"CLOACA_SANDBOX_{name}")
    return default if value in (None, "") else kind(value)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


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
        print(f"  trigger {trig.name} -> {trig.workflow} ({trig.function}; not fired by this host)")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


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
    from supervisor.edge.server import ConfigError, ServiceConfig, SupervisorServer

    logging.getLogger().setLevel(args.log_level.upper())
    try:
        config = ServiceConfig(
            listen=args.listen, data_dir=Path(args.data_dir).expanduser(), packages=[Path(p) for p in args.packages],
            api_keys=args.api_keys and Path(args.api_keys), import_timeout=args.import_timeout,
            call_timeout=args.call_timeout, memory_limit_mib=args.memory_limit or None,
            max_concurrency=args.max_concurrency, max_queue=args.max_queue, max_context_mib=args.max_context_mib,
            isolation=args.isolation, network=args.network, scratch_mib=args.scratch_mib,
            secrets=args.secrets and Path(args.secrets), vars=args.vars and Path(args.vars),
            tls_cert=args.tls_cert and Path(args.tls_cert), tls_key=args.tls_key and Path(args.tls_key))
        server = SupervisorServer(config)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(server, config, args.grace))


async def _serve(server: Any, config: Any, grace: float) -> int:
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
    except (ConfigError, DataDirInUse, IsolationUnavailable, SecretsFileError, VariablesFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        await server.stop(0)
        return EXIT_USAGE
    print(f"cloaca-sandbox serving on {config.listen} (data in {config.data_dir})", flush=True)
    await stop.wait()
    logging.getLogger(__name__).info("shutting down: finishing calls under way (up to %gs)", grace)
    await server.stop(grace)
    return EXIT_OK


# --- client commands -------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Any:
    from supervisor.client import SupervisorClient

    return SupervisorClient(args.server, args.api_key, args.tls_ca and Path(args.tls_ca))


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
            "isolation": dict(sorted(package.isolation.items())),
            "tasks": [_task_dict(task) for task in package.tasks],
            "workflows": [{"name": w.name, "description": w.description, "tasks": list(w.tasks)}
                          for w in package.workflows]}


def _task_dict(task: Any) -> dict[str, Any]:
    return {"id": task.id, "function": task.function, "dependencies": list(task.dependencies),
            "is_async": task.is_async, "workflow": task.workflow, "docstring": task.docstring}


def _call_dict(response: Any) -> dict[str, Any]:
    return {"status": _status(response.status),
            "context": json.loads(response.context_json) if response.context_json else None,
            "error": _error_dict(response.error),
            "output": {"stdout": response.output.stdout, "stderr": response.output.stderr},
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


def _print_output(output: dict[str, str]) -> None:
    for stream in ("stdout", "stderr"):
        if output[stream]:
            print(f"--- {stream} ---", file=sys.stderr)
            print(output[stream].rstrip("\n"), file=sys.stderr)


def command_client(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            return args.client_handler(client, args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as exc:
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


def client_unload(client: Any, args: argparse.Namespace) -> int:
    client.unload(args.package)
    print(json.dumps({"unloaded": args.package}) if args.json else f"unloaded {args.package}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloaca-sandbox", description="Sandboxed hosting of Python workflow packages.")
    commands = parser.add_subparsers(dest="command", required=True)

    package = commands.add_parser("package", help="build a .cloacina archive from a project directory "
                                  "(package.toml, or pyproject.toml with [tool.cloaca])")
    package.add_argument("project_dir")
    package.add_argument("-o", "--output", help="archive path (default: PROJECT_DIR/dist/NAME-VERSION.cloacina)")
    package.set_defaults(handler=command_package)

    inspect = commands.add_parser("inspect", help="run every loader check on an archive and list its tasks")
    inspect.add_argument("archive")
    inspect.set_defaults(handler=command_inspect)

    for sub in (package, inspect):
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.add_argument("--import-timeout", type=float, default=DEFAULT_IMPORT_TIMEOUT, metavar="SECONDS",
                         help="how long importing the entry module may take (default: %(default)s)")

    from supervisor.tenants import default_data_dir

    serve = commands.add_parser("serve", help="run the service (every option also reads CLOACA_SANDBOX_<OPTION>)")
    serve.add_argument("--listen", default=_env("LISTEN", DEFAULT_SERVER), help="host:port or unix:PATH")
    serve.add_argument("--data-dir", default=_env("DATA_DIR", str(default_data_dir())))
    serve.add_argument("--packages", action="append", metavar="DIR",
                       default=[p for p in _env("PACKAGES", "").split(os.pathsep) if p],
                       help="a directory of archives to load and watch (repeatable)")
    serve.add_argument("--api-keys", default=_env("API_KEYS"), metavar="FILE", help="'TENANT KEY' lines")
    serve.add_argument("--import-timeout", type=float, default=_env("IMPORT_TIMEOUT", 60.0, float), metavar="SECONDS")
    serve.add_argument("--call-timeout", type=float, default=_env("CALL_TIMEOUT", 300.0, float), metavar="SECONDS")
    serve.add_argument("--memory-limit", type=int, default=_env("MEMORY_LIMIT", 1024, int), metavar="MIB",
                       help="per sandbox, its whole process tree; 0 for none")
    serve.add_argument("--max-concurrency", type=int, default=_env("MAX_CONCURRENCY", 4, int), metavar="N",
                       help="calls one sandbox runs at once")
    serve.add_argument("--max-queue", type=int, default=_env("MAX_QUEUE", 64, int), metavar="N",
                       help="calls that may wait for a busy sandbox; more are refused at once")
    serve.add_argument("--max-context-mib", type=int, default=_env("MAX_CONTEXT_MIB", 64, int), metavar="MIB")
    serve.add_argument("--isolation", choices=("default", "strict"), default=_env("ISOLATION", "default"),
                       help="strict: refuse to start sandboxes unless every confinement layer holds")
    serve.add_argument("--network", action="store_true", default=_env("NETWORK", False, _truthy),
                       help="give sandboxes the host's network (by default they have none)")
    serve.add_argument("--scratch-mib", type=int, default=_env("SCRATCH_MIB", 256, int), metavar="MIB",
                       help="size of each sandbox's writable home and temp dir")
    serve.add_argument("--secrets", default=_env("SECRETS"), metavar="FILE",
                       help="the operator's secrets (TOML, mode 0600): a package receives the ones it declares")
    serve.add_argument("--vars", default=_env("VARS"), metavar="FILE",
                       help="configuration variables per tenant (TOML); the service's own CLOACINA_VAR_* "
                            "go to the default tenant only")
    serve.add_argument("--tls-cert", default=_env("TLS_CERT"), metavar="FILE")
    serve.add_argument("--tls-key", default=_env("TLS_KEY"), metavar="FILE")
    serve.add_argument("--grace", type=float, default=_env("GRACE", 30.0, float), metavar="SECONDS",
                       help="how long calls under way may finish at shutdown")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    serve.set_defaults(handler=command_serve)

    def client_command(name: str, handler: Callable[[Any, argparse.Namespace], int], help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--server", default=_env("SERVER", DEFAULT_SERVER))
        sub.add_argument("--api-key", default=_env("API_KEY"))
        sub.add_argument("--tls-ca", default=_env("TLS_CA"), metavar="FILE", help="trust this CA (the server uses TLS)")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.set_defaults(handler=command_client, client_handler=handler)
        return sub

    client_command("upload", client_upload, "upload a package archive").add_argument("archive")
    client_command("list", client_list, "list your packages")
    client_command("tasks", client_tasks, "list a package's tasks and workflows").add_argument("package")
    call = client_command("call", client_call, "call one task")
    call.add_argument("package")
    call.add_argument("task")
    call.add_argument("--context", metavar="JSON|@FILE")
    call.add_argument("--timeout", type=float, metavar="SECONDS")
    run = client_command("run", client_run, "run a workflow")
    run.add_argument("package")
    run.add_argument("workflow", nargs="?")
    run.add_argument("--context", metavar="JSON|@FILE")
    client_command("unload", client_unload, "unload a package").add_argument("package")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Warnings reach the user through each command's own report; serve raises the level.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
