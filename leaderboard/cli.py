"""``mocobench leaderboard``: the results table (md/csv/html), and ``leaderboard check``, the CI gate.

    mocobench leaderboard [--results DIR] [--format md|csv|html] [-o OUT] [--rows all|measured|reported]
    mocobench leaderboard check --baseline BASELINE.json [--results DIR] [--update-baseline]
    mocobench leaderboard check --against-paper [--results DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RESULTS = "outputs/results"


def _table_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mocobench leaderboard",
        description="Build the leaderboard from result records: one row per checkpoint, one column per "
                    "(task, protocol, dataset, engine, metric), with the papers' reported rows. "
                    "'mocobench leaderboard check --help' for the CI gate.")
    p.add_argument("--results", action="append", default=None,
                   help=f"records folder (default {DEFAULT_RESULTS}); give it once per run of the same pipeline "
                        "with another --seed (./run_all.sh --seed S --out DIR) for one table over the runs: rows "
                        "matched by checkpoint name, each cell the mean ± std of the runs' records")
    p.add_argument("--format", choices=("md", "csv", "html"), default="md")
    p.add_argument("-o", "--output", help="write here (atomically) instead of printing")
    p.add_argument("--rows", choices=("all", "measured", "reported"), default="all",
                   help="which rows to show (default all: measured, then the papers' reported rows)")
    p.add_argument("--no-reported", action="store_true", help="same as --rows measured")
    p.add_argument("--all-metrics", action="store_true",
                   help="every metric of the records (per-class AP/IoU too), not only the papers' columns")
    p.add_argument("--title", default="mocobench leaderboard", help="HTML page title")
    p.add_argument("--spread", metavar="BASELINE",
                   help="a baseline JSON (leaderboard/baselines/) whose runs give the seed spread of cells "
                        "measured with one seed, for the marks against random init")
    return p


def _check_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mocobench leaderboard check",
        description="Compare the current records with a baseline; exit 1 on a regression beyond tolerance "
                    "or a baseline entry with no result. See docs/leaderboard.md for the baseline format.")
    p.add_argument("--baseline", help="baseline JSON file")
    p.add_argument("--against-paper", action="store_true",
                   help="instead of a baseline: every measured cell that shares a column with its paper row "
                        "(same method, arch, epochs, label fraction) must lie within the band of its Δ; exit 1 "
                        "when one does not, or when no cell can be compared")
    p.add_argument("--results", action="append", default=None,
                   help=f"records folder (default {DEFAULT_RESULTS}); with --update-baseline it may be given "
                        "once per run of the same pipeline with another --seed: each entry's value is then the "
                        "mean over the runs and its allowed drop k x their standard deviation")
    p.add_argument("--update-baseline", action="store_true",
                   help="write a new baseline from the current records (keeps each existing entry's "
                        "tolerance/k/relative_to settings) instead of checking")
    return p


def check_main(argv: list[str]) -> int:
    from mocobench.leaderboard.check import BaselineError, run_check

    parser = _check_parser()
    args = parser.parse_args(argv)
    results = args.results or [DEFAULT_RESULTS]
    if args.against_paper:
        if args.baseline or args.update_baseline or len(results) > 1:
            parser.error("--against-paper checks one results folder against the papers' rows; it takes no "
                         "--baseline or --update-baseline")
        from mocobench.leaderboard.check import run_against_paper

        if not Path(results[0]).is_dir():
            parser.error(f"--results {results[0]}: no such results folder")
        return run_against_paper(results[0])
    if not args.baseline:
        parser.error("give --baseline FILE (or --against-paper)")
    if len(results) > 1 and not args.update_baseline:
        parser.error("several --results folders are for --update-baseline (one per seed); a check reads one")
    for folder in results:
        if not Path(folder).is_dir():
            parser.error(f"--results {folder}: no such results folder")
    try:
        if len(results) > 1:
            from mocobench.leaderboard.check import update_from_runs

            return update_from_runs(args.baseline, results)
        return run_check(args.baseline, results[0], update=args.update_baseline)
    except BaselineError as e:
        print(f"mocobench leaderboard check: {e}", file=sys.stderr)
        return 2


def render(results: str | Path | list[str | Path], fmt: str, *, rows: str = "all", all_metrics: bool = False,
           title: str = "mocobench leaderboard", plots: bool = True,
           spread: str | Path | None = None) -> tuple[str, "object"]:
    """The leaderboard text in ``fmt`` and the table it came from (``results``: a folder, or one
    per run); raises TableError on a protocol mismatch and BaselineError on an unusable ``spread``
    baseline."""
    from mocobench.leaderboard import table as tb

    spreads = None
    if spread is not None:
        from mocobench.leaderboard.check import read_baseline

        spreads = read_baseline(spread)["entries"]
    table = tb.load_table(results, reported=rows != "measured", all_metrics=all_metrics, spreads=spreads)
    tb.check_table(table)
    table = table.restrict(rows=rows)
    if fmt == "md":
        return tb.to_markdown(table), table
    if fmt == "csv":
        return tb.to_csv(table), table
    from mocobench.leaderboard.html import render as render_html

    shown = results if isinstance(results, (str, Path)) else ", ".join(map(str, results))
    return render_html(table, title=title, results_dir=str(shown), plots=plots), table


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        return check_main(argv[1:])
    from mocobench.leaderboard.check import BaselineError
    from mocobench.leaderboard.table import TableError

    parser = _table_parser()
    args = parser.parse_args(argv)
    if args.no_reported and args.rows != "all":
        parser.error(f"--no-reported is --rows measured; it cannot be given with --rows {args.rows}")
    if args.title != parser.get_default("title") and args.format != "html":
        parser.error(f"--title is the HTML page's title; --format {args.format} has none")
    rows = "measured" if args.no_reported else args.rows
    results = args.results or [DEFAULT_RESULTS]
    for folder in results if rows != "reported" else ():
        if not Path(folder).is_dir():
            parser.error(f"--results {folder}: no such results folder (use --rows reported for the "
                         f"papers' numbers alone)")
    try:
        text, table = render(results, args.format, rows=rows,
                             all_metrics=args.all_metrics, title=args.title, spread=args.spread)
    except (TableError, BaselineError) as e:
        print(f"mocobench leaderboard: {e}", file=sys.stderr)
        return 1
    for p in table.problems:
        print(f"warning: {p}", file=sys.stderr)
    if args.output:
        from mocobench.core.io import atomic_write_text

        atomic_write_text(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
