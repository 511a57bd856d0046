"""Whether this interpreter is a sandbox, where the host is the runner.

In the Cloacina server `cloaca` has no `DefaultRunner`, `DefaultRunnerConfig`,
`WorkflowResult` or `_shutdown_all_runners` ("the server IS the runner"), so
package code that touches them fails there with AttributeError. A sandbox
behaves the same: the sandbox runtime calls `enter_sandbox()` before it
imports the package, and from then on those names are absent from `cloaca`.
"""

from __future__ import annotations

WHEEL_ONLY_NAMES = ("DefaultRunner", "DefaultRunnerConfig", "WorkflowResult", "_shutdown_all_runners")

_in_sandbox = False


def enter_sandbox() -> None:
    global _in_sandbox
    _in_sandbox = True


def in_sandbox() -> bool:
    return _in_sandbox
