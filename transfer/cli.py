"""``mocobench eval TASK`` and ``mocobench score KIND``: tables from the word to the module that owns it.

Each module's entry point takes the task/kind word and the remaining arguments.
"""

from __future__ import annotations

import importlib
import sys

EVAL_TASKS = {
    "linear": "mocobench.transfer.classification.cli",
    "knn": "mocobench.transfer.classification.cli",
    "semi": "mocobench.transfer.classification.cli",
    "detection": "mocobench.transfer.detection.cli",
    "segmentation": "mocobench.transfer.segmentation.cli",
}

SCORE_KINDS = {
    "voc": "mocobench.transfer.detection.cli",
    "cityscapes": "mocobench.transfer.segmentation.cli",
    "voc-seg": "mocobench.transfer.segmentation.cli",
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
        from mocobench.transfer.adapters.cli import main as convert_main

        return convert_main(argv[1:])
    print("usage: python -m mocobench.transfer {eval,score,convert} ...", file=sys.stderr)
    return 2
