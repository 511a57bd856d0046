from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cloaca.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Tests that declare tasks in this process start and end with an empty registry."""
    REGISTRY.clear()
    yield
    REGISTRY.clear()
