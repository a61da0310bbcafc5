"""What ``./run_all.sh`` runs when given no 'test': the stages of the suite, in order."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from mocobench.cli import main as cli

    return cli(["data", "synth", "--out", "outputs/data", "--scale", "small"])


if __name__ == "__main__":
    sys.exit(main())
