"""A caller's context on its way into a sandbox: always JSON bytes, checked only where it is cheap.

Bytes and text pass through untouched (the sandbox decodes them anyway, and
answers a bad one as `invalid_context`, which the supervisor raises as
InvalidContextError). Python objects are checked for JSON types, then encoded
with orjson. Either way the size is checked against the limit here.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from cloaca._json import check_json_object
from cloaca.context import Context
from supervisor.results import InvalidContextError

ContextLike = Context | Mapping[str, Any] | str | bytes | None


def encode_context(context: ContextLike, limit: int) -> bytes:
    """A caller's context as JSON bytes, or InvalidContextError saying what is wrong."""
    if context is None:
        payload = b"{}"
    elif isinstance(context, bytes):
        payload = context or b"{}"
    elif isinstance(context, str):
        try:
            payload = context.encode("utf-8") or b"{}"
        except UnicodeEncodeError as exc:
            raise InvalidContextError(f"the context is not valid UTF-8: {exc}") from None
    elif isinstance(context, Context):
        payload = context.to_json().encode()
    elif isinstance(context, Mapping):
        data = dict(context)
        try:
            check_json_object(data)
        except TypeError as exc:
            raise InvalidContextError(str(exc)) from None
        payload = orjson.dumps(data)
    else:
        raise InvalidContextError(f"a context must be a JSON object, not {type(context).__qualname__}")
    if len(payload) > limit:
        raise InvalidContextError(f"the context is {len(payload)} bytes, over the {limit} byte limit")
    return payload
