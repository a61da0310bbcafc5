"""The ``mocobench`` console command: one table of subcommands, each owned by a package.

Each entry names the function that implements it; the module is imported only when that
subcommand runs, so ``mocobench --help`` stays fast and a broken optional stage cannot break the
others.
"""

from __future__ import annotations

import importlib
import sys

# subcommand: (module, function, one-line description)
COMMANDS = {
    "data": ("core.data.cli", "main", "generate the embedded dataset (synth) or convert real files (fashion-mnist)"),
    "pretrain": ("pretrain.cli", "main", "pretrain a backbone with MoCo v1/v2, UniMoCo or SMoG (also under torchrun)"),
    "inspect": ("checkpoints.cli", "inspect_main", "detect a checkpoint's format and show the keys used, dropped and its metadata"),
    "convert": ("transfer.adapters.cli", "main", "convert a checkpoint for detectron2, mmseg/mmdet, torchvision, timm or safetensors"),
    "fetch": ("checkpoints.cli", "fetch_main", "download a named zoo checkpoint into the cache, resuming and verifying sha256"),
    "eval": ("transfer.cli", "eval_main", "evaluate a checkpoint: linear, knn, semi, detection, segmentation"),
    "score": ("transfer.cli", "score_main", "score predictions from any model: voc (detection), cityscapes, voc-seg"),
    "leaderboard": ("leaderboard.cli", "main", "build the results table (md/csv/html) or gate CI with 'leaderboard check'"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mocobench <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "Run 'mocobench <command> --help' for a command's options."]
    return "\n".join(lines)


def run(name: str, argv: list[str]) -> int:
    module_name, func_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            print(f"mocobench {name}: not built yet ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, func_name)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from core import __version__

        print(f"mocobench {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"mocobench: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
