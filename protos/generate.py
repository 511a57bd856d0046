"""Regenerate the Python code for every .proto under protos/: `python protos/generate.py`.

Each proto's path mirrors the Python package its code belongs in, so the
output lands beside the hand-written modules (sandbox_runtime/protocol/, ...).
`--check` writes to a scratch directory and fails if the committed code differs.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(output: Path) -> list[Path]:
    """Run protoc into `output`; returns the generated files, relative to it."""
    include = str(Path(protoc.__file__).parent / "_proto")
    sources = [str(path.relative_to(PROTOS)) for path in proto_files()]
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={output}", f"--pyi_out={output}",
            f"--grpc_python_out={output}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(path.relative_to(output) for path in output.rglob("*") if path.is_file())


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        generated = generate(Path(scratch))
        stale = [path for path in generated
                 if not (ROOT / path).exists() or not filecmp.cmp(Path(scratch) / path, ROOT / path, shallow=False)]
        if "--check" in argv:
            for path in stale:
                print(f"stale: {path}", file=sys.stderr)
            return 1 if stale else 0
        for path in stale:
            shutil.copyfile(Path(scratch) / path, ROOT / path)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
