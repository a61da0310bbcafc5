"""``mocobench eval TASK`` and ``mocobench score KIND``: tables from the word to the module that owns it.

Each module's entry point takes the task/kind word and the remaining arguments.
"""

from __future__ import annotations

import importlib
import sys

EVAL_TASKS = {
    "linear": "transfer.classification.cli",
    "knn": "transfer.classification.cli",
    "semi": "transfer.classification.cli",
    "detection": "transfer.detection.cli",
    "segmentation": "transfer.segmentation.cli",
}

SCORE_KINDS = {
    "voc": "transfer.detection.cli",
    "cityscapes": "transfer.segmentation.cli",
    "voc-seg": "transfer.segmentation.cli",
}


def _dispatch(table: dict[str, str], func: str, what: str, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in table:
        known = ", ".join(table)
        stream = sys.stdout if (argv and argv[0] in ("-h", "--help")) else sys.stderr
        print(f"usage: mocobench {what} {{{known}}} [options]", file=stream)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"mocobench {what}: unknown {what} kind {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    module = importlib.import_module(table[argv[0]])
    return int(getattr(module, func)(argv[0], argv[1:]) or 0)


def eval_main(argv: list[str]) -> int:
    return _dispatch(EVAL_TASKS, "eval_main", "eval", argv)


def score_main(argv: list[str]) -> int:
    return _dispatch(SCORE_KINDS, "score_main", "score", argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "eval":
        return eval_main(argv[1:])
    if argv and argv[0] == "score":
        return score_main(argv[1:])
    if argv and argv[0] == "convert":
        from transfer.adapters.cli import main as convert_main

        return convert_main(argv[1:])
    print("usage: python -m transfer {eval,score,convert} ...", file=sys.stderr)
    return 2
