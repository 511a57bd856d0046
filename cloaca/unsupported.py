"""Features this host does not run yet, importable so a package fails loudly at load, not at import.

Computation graphs (`ComputationGraphBuilder`, `@node`, `@reactor`, the five
accumulator decorators, `@task(invokes=...)`) and `cloaca.constructor` (WASM
constructor providers) exist under the engine's names and signatures. Using
one records an `UnsupportedUse`: the package loader refuses a package that
declares any (naming the feature), and `DefaultRunner` refuses to run a
workflow that contains a constructor or a graph invocation. Nothing is
accepted and then silently ignored.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from cloaca.namespace import current_context
from cloaca.registry import REGISTRY, UnsupportedUse

T = TypeVar("T")
GRAPH = "computation graph"
CONSTRUCTOR = "constructor"


def _name_of(target: Any) -> str:
    return str(getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target))


class ComputationGraphBuilder:
    """`ComputationGraphBuilder(name, *, graph, reactor=None, react=None)`: recorded, never run here."""

    def __init__(self, name: str, *, graph: Any = None, reactor: Any = None, react: Any = None) -> None:
        self.NAME = name  # the attribute `@task(invokes=...)` reads, as in the engine
        self.graph = graph
        self.reactor = reactor
        self.react = react
        REGISTRY.add_unsupported(UnsupportedUse(GRAPH, str(name), f"ComputationGraphBuilder({name!r})"))

    def __enter__(self) -> "ComputationGraphBuilder":
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return f"ComputationGraphBuilder(name={self.NAME!r})"


def _bare_or_called(feature: str, label: str) -> Callable[..., Any]:
    """A decorator usable as `@x` or `@x(...)` that records one use of `feature` per decorated object."""

    def decorator(target: Any = None, /, **options: Any) -> Any:
        def record(obj: T) -> T:
            name = options.get("name") or _name_of(obj)
            REGISTRY.add_unsupported(UnsupportedUse(feature, str(name), f"@cloaca.{label} on {_name_of(obj)}"))
            return obj

        if target is not None and callable(target) and not options:
            return record(target)
        return record

    decorator.__name__ = label
    decorator.__doc__ = f"`@cloaca.{label}`: part of computation graphs, which this host does not run yet."
    return decorator


node = _bare_or_called(GRAPH, "node")
passthrough_accumulator = _bare_or_called(GRAPH, "passthrough_accumulator")
stream_accumulator = _bare_or_called(GRAPH, "stream_accumulator")
polling_accumulator = _bare_or_called(GRAPH, "polling_accumulator")
batch_accumulator = _bare_or_called(GRAPH, "batch_accumulator")
state_accumulator = _bare_or_called(GRAPH, "state_accumulator")


def reactor(*, name: str, accumulators: Any = None, mode: str = "when_any") -> Callable[[T], T]:
    """`@cloaca.reactor(name=..., accumulators=..., mode="when_any")` on a class: recorded, never run here."""

    def record(cls: T) -> T:
        REGISTRY.add_unsupported(UnsupportedUse("reactor", str(name), f"@cloaca.reactor(name={name!r}) on "
                                                f"{_name_of(cls)}"))
        return cls

    return record


def constructor(id: str, from_: Any, constructor: Any, config: Any = None, grants: Any = None,  # noqa: A002
                dependencies: Any = None, runtime: Any = None) -> None:
    """`cloaca.constructor(...)`: a WASM constructor-provider node; recorded, never run here."""
    context = current_context()
    REGISTRY.add_unsupported(UnsupportedUse(
        CONSTRUCTOR, str(id), f"cloaca.constructor(id={id!r}) in workflow {context.workflow_id!r}",
        context.workflow_id))
