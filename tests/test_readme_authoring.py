"""The README's authoring sections (ours: "Writing a workflow" to "What the loader refuses"), run as written."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.test_readme import README, code_blocks

OURS = README[README.index("\n## Writing a workflow\n"):README.index("\n## Sandboxes\n")]


def run_local_example(index: int) -> str:
    """The `index`th Python block of "Running locally", run as written from the repository; its output."""
    section = OURS[OURS.index("### Running locally"):OURS.index("## Packaging")]
    example = code_blocks(section, "python")[index]
    ran = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_running_a_package_toml_package_locally_as_written():
    assert run_local_example(1).strip() == "255 visits on 3 pages"


def test_the_runners_schedule_api_as_written():
    assert run_local_example(2).split() == ["0", "0", "2", "*", "*", "*", "True"]


def test_every_loader_code_is_documented():
    from supervisor import archive, errors

    documented = {line.split("`")[1] for line in OURS.splitlines() if line.startswith("| `")}
    codes = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.PackageError)
             and cls is not errors.PackageError}
    codes |= {archive.NotAnArchiveError.code, archive.UnsafeArchiveError.code, archive.ArchiveTooLargeError.code}
    assert codes == documented
