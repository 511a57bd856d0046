"""What a tenant sees names no path of the server: its prefixes become neutral names.

Tracebacks carry the files of every frame, errors name the files they could not
read, and a sandbox's output may print anything. Before such text leaves the
service, each server prefix is replaced: the standard library and the
interpreter become `<python>`, the directories the sandbox runtime is imported
from `<runtime>`, the data dir `<data>`, a watched directory `<watched>`. A
package's own files are already relative to the package (cloaca/errors.py).

Text holding none of the prefixes (most output, every successful call) costs
one substring search per prefix and is returned as it was.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import Iterable

# A prefix matches only as whole path components: followed by '/', or by what cannot continue a name.
_END = r"(?=/|[\s'\"`:;,()\[\]<>]|$)"


class PathRedactor:
    def __init__(self, prefixes: Iterable[tuple[str, str]]) -> None:
        names: dict[str, str] = {}
        for prefix, name in prefixes:
            for variant in {prefix, os.path.realpath(prefix)}:
                variant = variant.rstrip("/")
                if len(variant) > 1:  # never "/" itself
                    names.setdefault(variant, name)
        self._names = names
        self._prefixes = sorted(names, key=len, reverse=True)  # the longest (most specific) first
        self._pattern = re.compile("|".join(re.escape(prefix) + _END for prefix in self._prefixes)) \
            if self._prefixes else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text or not any(prefix in text for prefix in self._prefixes):
            return text
        return self._pattern.sub(lambda match: self._names[match.group(0)], text)


def service_redactor(data_dir: Path, watched: Iterable[Path], runtime_dirs: Iterable[str]) -> PathRedactor:
    """The prefixes of one service: its data dir, watched dirs, the runtime's dirs and the interpreter's."""
    paths = sysconfig.get_paths()
    prefixes = [(str(directory.absolute()), "<watched>") for directory in watched]
    prefixes += [(str(data_dir.absolute()), "<data>")]
    prefixes += [(paths["stdlib"], "<python>"), (paths["platstdlib"], "<python>")]
    prefixes += [(directory, "<runtime>") for directory in runtime_dirs]
    prefixes += [(sys.prefix, "<python>"), (sys.base_prefix, "<python>"), (sys.exec_prefix, "<python>")]
    return PathRedactor(prefixes)


def no_redaction(text: str) -> str:
    return text
