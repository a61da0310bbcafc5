"""The ``mocobench`` console command: one table of subcommands, each owned by a package.

Each entry names the function that implements it; the module is imported only when that
subcommand runs, so ``mocobench --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

from mocobench.core.io import one_line

# subcommand: (module, function, one-line description)
COMMANDS = {
    "data": ("mocobench.datasets.cli", "main", "generate the embedded dataset (synth) or convert real files (fashion-mnist)"),
    "pretrain": ("mocobench.pretrain.cli", "main", "pretrain a backbone with MoCo v1/v2, UniMoCo or SMoG (also under torchrun)"),
    "inspect": ("mocobench.checkpoints.cli", "inspect_main", "detect a checkpoint's format and show the keys used, dropped and its metadata"),
    "convert": ("mocobench.transfer.adapters.cli", "main", "convert a checkpoint for detectron2, mmseg/mmdet, torchvision, timm or safetensors"),
    "fetch": ("mocobench.checkpoints.cli", "fetch_main", "download a named zoo checkpoint into the cache, resuming and verifying sha256"),
    "eval": ("mocobench.transfer.cli", "eval_main", "evaluate a checkpoint: linear, knn, semi, detection, segmentation"),
    "score": ("mocobench.transfer.cli", "score_main", "score predictions from any model: voc (detection), cityscapes, voc-seg"),
    "preflight": ("mocobench.transfer.preflight", "main", "before a long run: is a checkpoint healthy, collapsed or like random init, on your data"),
    "leaderboard": ("mocobench.leaderboard.cli", "main", "build the results table (md/csv/html) or gate CI with 'leaderboard check'"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mocobench <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "Run 'mocobench <command> --help' for a command's options.",
              "Errors print one line and exit 1 (2 for usage errors); --debug (or MOCOBENCH_DEBUG=1)",
              "shows the traceback instead."]
    return "\n".join(lines)


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("MOCOBENCH_DEBUG", "") not in ("", "0")


def run(name: str, argv: list[str]) -> int:
    """Run one subcommand. Errors are one line, ``mocobench NAME: problem``, and exit 1; usage
    errors exit 2 (argparse). ``--debug`` or ``MOCOBENCH_DEBUG=1`` shows the traceback instead."""
    module_name, func_name, _ = COMMANDS[name]
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if debug:
        module = importlib.import_module(module_name)
        return int(getattr(module, func_name)(argv) or 0)
    try:
        module = importlib.import_module(module_name)
        return int(getattr(module, func_name)(argv) or 0)
    except KeyboardInterrupt:
        print(f"mocobench {name}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the one place that turns any failure into one line
        print(f"mocobench {name}: {describe(e)}", file=sys.stderr)
        return 1


def describe(e: BaseException) -> str:
    """One line for an exception: its message, with the file it names when the error carries one.

    Errors the suite raises on bad input (ValueError, OSError and their kin, or an exception type
    of the suite or a library) carry a message written for the user; any other built-in
    exception (KeyError, TypeError, ...) is a bug or an unforeseen input, so its type is shown.
    """
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in str(e):
        text = f"{e.filename}: {e.strerror or e}"
    else:
        text = str(e) or type(e).__name__
    if type(e).__module__ == "builtins" and not isinstance(e, (ValueError, OSError, RuntimeError)):
        text = f"{type(e).__name__}: {text}"
    text = one_line(text)   # one line, whatever the message held
    return text if len(text) <= 2000 else text[:2000] + " ..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from mocobench.core import __version__

        print(f"mocobench {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"mocobench: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
