"""One-shot discovery: import the entry module, write the discovery JSON, exit.

Started by the supervisor as `python -I -S -c <bootstrap>`; the result goes
to a file rather than stdout so nothing the package prints can corrupt it.
Usage (after bootstrap): discover ENTRY_MODULE OUTPUT_FILE
"""

from __future__ import annotations

import json
import sys

from cloaca.errors import error_from_exception
from sandbox.discovery import describe, import_entry_module


def main(argv: list[str], package_paths: list[str]) -> int:
    entry_module, output = argv
    try:
        import_entry_module(entry_module)
        document = {"ok": True, "discovery": describe(entry_module)}
    except BaseException as exc:  # noqa: BLE001 - report anything, even SystemExit, as data
        document = {"ok": False, "error": error_from_exception(exc, tuple(package_paths)).to_dict()}
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], []))
