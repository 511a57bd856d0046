"""The `cloaca-sandbox` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from supervisor.build import build_package
from supervisor.discovery import DEFAULT_IMPORT_TIMEOUT, Discovery
from supervisor.errors import DiscoveryError, PackageError
from supervisor.inspection import inspect_archive
from supervisor.manifest import Manifest

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _print_package(manifest: Manifest, discovery: Discovery, warnings: list[str]) -> None:
    package = manifest.package
    assert manifest.python is not None
    print(f"{package.name} {package.version}")
    if package.description:
        print(f"  {package.description}")
    print(f"  entry module:    {manifest.python.entry_module}")
    print(f"  requires python: {manifest.python.requires_python}")
    print(f"  fingerprint:     {package.fingerprint}")
    print(f"  targets:         {', '.join(package.targets) or '-'}")
    for workflow in discovery.workflows:
        print(f"  workflow {workflow.name}" + (f": {workflow.description}" if workflow.description else ""))
        for task_id in workflow.tasks:
            task = discovery.task(task_id)
            assert task is not None
            deps = f" <- {', '.join(task.dependencies)}" if task.dependencies else ""
            kind = "async " if task.is_async else ""
            print(f"    {kind}{task.id}{deps}   ({task.function})")
    for trig in discovery.triggers:
        print(f"  trigger {trig.name} -> {trig.workflow} ({trig.function})")
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
    if args.json:
        print(json.dumps({"ok": True, "archive": str(output), "manifest": manifest.model_dump(mode="json")}))
    else:
        _print_package(manifest, discovery, [])
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
            "manifest": report.manifest.model_dump(mode="json", exclude_none=True),
            "fingerprint": report.fingerprint,
            "discovery": report.discovery.model_dump(mode="json"),
            "warnings": report.warnings,
        }, indent=2))
    else:
        _print_package(report.manifest, report.discovery, report.warnings)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloaca-sandbox", description="Sandboxed hosting of Python workflow packages.")
    commands = parser.add_subparsers(dest="command", required=True)

    package = commands.add_parser("package", help="build a .cloacina archive from a project directory")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Warnings reach the user through each command's own report, not the log.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
