"""``python -m mocobench.checkpoints inspect CKPT`` / ``python -m mocobench.checkpoints fetch NAME``."""

import sys

from mocobench.checkpoints.cli import fetch_main, inspect_main

COMMANDS = {"inspect": inspect_main, "fetch": fetch_main}

if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    print("usage: python -m mocobench.checkpoints {inspect,fetch} ...", file=sys.stderr)
    sys.exit(2)
sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
