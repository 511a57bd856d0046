"""Lines a sandbox writes on its output (stdout, which the supervisor reads) before any package code runs.

Both ends import them from here. Package code cannot forge them in time: the
ready mark is written as soon as the sandbox's link listens, before its package
is imported, and the probe's report is the probe's only output.
"""

READY_MARK = b"\x00cloaca-sandbox: link listening\n"  # the socket accepts connections now
PROBE_MARK = "CLOACA-SANDBOX-PROBE "  # followed by the isolation probe's report, as JSON
