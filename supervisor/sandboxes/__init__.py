"""Sandboxes from the supervisor's side: how each is born, owned, called, and confined.

Everything here runs on the supervisor's one event loop (no thread of ours):

  caller task ─call()─▶ Sandbox (lifecycle.py) ──admission: slots per incarnation, a bounded queue
                          │  takes a slot on the current Incarnation, then
                          ▼
                        SandboxLink (link.py) ══ one Calls stream (gRPC, Unix socket) ══▶ sandbox
                          ▲  reader task resolves each call's future by call_id     (sandbox_runtime/link.py)
                          │
  owner task (one per Sandbox) ◀── inbox (asyncio.Queue) ◀── events:
      "exited"        from the incarnation's watcher task (its process ended; the launcher says how)
      "broken"        from the link's reader task (the stream ended while the process lives)
      "retire"        from a caller whose call timed out or was abandoned (sync task: no cancel)
      "idle"          from a caller releasing the last slot of a retired incarnation
      "kill"          from the memory monitor (no cgroup enforces the limit)
      "started" / "start_failed" / "integrity_failed" / "start_done"   from the restart task
      "stop" / "stop_now"   from unload, replacement drain or shutdown
  The owner alone changes State and `current`; callers only count slots.

  Launcher (launchers.py): ZygoteLauncher ──control socket (SEQPACKET)──▶ zygote (sandbox_runtime/zygote.py)
      spawn request + output pipe fd ─▶ fork ─▶ confine (sandbox_runtime/confinement) ─▶ serve
      ◀─ spawned pid + pidfd;  ◀─ exited pid + status (the zygote reaps)
  SpawnLauncher: a fresh interpreter per sandbox, waited for through its pidfd.

  Shared by all sandboxes (services.py): the runtime dir (runtime.py), the cgroup
  backend (cgroups.py), the isolation policy and its machine probe (isolation.py),
  and the output pipes that keep what sandboxes print outside calls (output.py).
"""
