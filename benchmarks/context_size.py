"""Large contexts through the public service: a task that returns its context unchanged.

Each size is printed beside the floor of moving the same bytes: a sync client's
unary echo over TCP loopback to a grpc.aio server, in the same run. The service
moves the context twice (client -> service -> sandbox and back) and the sandbox
decodes it into the task's Context and encodes the answer; the supervisor passes
the bytes through untouched.

Target (issue 8): 1 MB echo at most 6x the unary echo of the same bytes; 10 MB reported.

Run: python benchmarks/context_size.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import Summary, echo_server, free_port, noop_archive, timed, unary_floor
from daemon import daemon

from supervisor.client import SupervisorClient  # noqa: E402


def context_of(size: int) -> bytes:
    """A context of about `size` bytes: a list of small records, as real contexts grow."""
    record = {"id": 0, "name": "record-0000000", "score": 0.5, "ok": True, "tags": ["a", "b"]}
    one = len(json.dumps(record, separators=(",", ":"))) + 1
    records = [dict(record, id=index, name=f"record-{index:07d}") for index in range(size // one)]
    return json.dumps({"records": records}, separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-contexts-"))
    archive = scratch / "noop.cloacina"
    archive.write_bytes(noop_archive())
    sizes = {"1 MB": 1_000_000, "10 MB": 10_000_000}
    payloads = {label: context_of(size) for label, size in sizes.items()}

    floors = {}
    with echo_server(f"127.0.0.1:{free_port()}") as address:
        for label, payload in payloads.items():
            runs = args.runs if len(payload) < 5_000_000 else max(3, args.runs // 3)
            floors[label] = Summary(unary_floor(address, payload, runs))

    echoes = {}
    with daemon(scratch / "data", "--max-context-mib", "32") as (address, _), SupervisorClient(address) as client:
        client.upload(archive)
        for label, payload in payloads.items():
            runs = args.runs if len(payload) < 5_000_000 else max(3, args.runs // 3)

            def echo() -> None:
                answer = client.call("noop", "noop", payload, timeout=120)
                assert answer.error.kind == "", answer.error
                assert len(answer.context_json) == len(payload)

            echoes[label] = Summary(timed(echo, runs, warmup=1))

    for label in sizes:
        floor, echo = floors[label], echoes[label]
        target = "  (target <= 6x)" if label == "1 MB" else ""
        print(f"{label:>6} context echo through CallTask   {echo.ms()}")
        print(f"{'':>6} floor: unary echo of the bytes    {floor.ms()}   ratio {echo.median / floor.median:.1f}x{target}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
