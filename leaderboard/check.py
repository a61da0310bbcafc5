"""The CI gate: compare the current records with a committed baseline.

A baseline is a JSON file::

    {"format": "mocobench-baseline", "version": 1, "created": "...", "note": "...",
     "defaults": {"tolerance": 2.0, "k": 3.0},
     "entries": [
       {"checkpoint": "random-timm-test_resnet", "task": "knn", "protocol": "dino-knn", "metric": "top1",
        "value": 21.5, "tolerance": 8.0},
       {"checkpoint": "moco_v2", "task": "knn", "protocol": "dino-knn", "metric": "top1",
        "relative_to": "random-timm-test_resnet", "value": 9.0, "tolerance": 6.0},
       {"checkpoint": "moco_v2", "task": "linear", "protocol": "fast", "metric": "top1",
        "value": 40.1, "std": 0.8, "n": 3, "k": 3.0, "tolerance": 2.0}
     ]}

Each entry names one (checkpoint, task, protocol, metric) cell of the table (``dataset`` and
``engine`` may be added when the name alone is ambiguous). The compared quantity ``q`` is the
cell's mean over seeds, or with ``relative_to`` the difference between this checkpoint's mean
and that checkpoint's mean in the same column (e.g. "pretrained kNN minus random-init kNN"),
which is stable where absolute values on tiny data are not.

An entry also records what its cell was measured with, and the check holds the current cell to
it: ``cell_seeds``, the number of seeds in the cell (of one run), and ``settings``, a digest of the
protocol settings its records ran (``leaderboard.table.protocol_settings``; the baseline's top-level
``settings`` maps each digest to the settings, so a mismatch names what changed). Entries written
before these fields existed are compared on their value alone.

The allowed drop is ``k x std`` when the entry has ``k``, ``n >= 2`` and ``std > 0``, else
``tolerance`` (absolute, in the metric's units: points of percent). An entry regresses when
``q < value - allowed`` (all metrics here are higher-is-better; ``"direction": "lower"`` flips
it). A baseline entry with no current result is a failure too. Moving up beyond the allowed
band is reported as "improved" and passes; ``--update-baseline`` records the new values.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mocobench.core.records import TASKS, code_version, metric_problem
from mocobench.leaderboard.table import (DISPLAY_METRICS, Table, checkpoint_display_name, entry_names, load_table,
                                         settings_differences)

BASELINES_DIR = Path(__file__).with_name("baselines")   # the committed baselines, one per embedded mode
BASELINE_FORMAT = "mocobench-baseline"
BASELINE_VERSION = 1
DEFAULT_TOLERANCE = 2.0   # points of percent
DEFAULT_K = 3.0


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file and the problem."""


@dataclass
class Outcome:
    entry: dict
    current: float | None
    allowed: float
    status: str        # "ok" | "improved" | "REGRESSED" | "MISSING" | "ERROR"
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("REGRESSED", "MISSING", "ERROR")

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.current - float(self.entry["value"])


def read_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such baseline file (write one with --update-baseline)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"{path}: not a readable JSON baseline ({e})") from None
    if not isinstance(obj, dict) or obj.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"{path}: not a mocobench baseline (format should be {BASELINE_FORMAT!r})")
    version = obj.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise BaselineError(f"{path}: version must be a whole number, not {version!r}")
    if version > BASELINE_VERSION:
        raise BaselineError(f"{path}: baseline version {obj['version']} is newer than this mocobench "
                            f"understands ({BASELINE_VERSION})")
    defaults = obj.get("defaults", {})
    if not isinstance(defaults, dict):
        raise BaselineError(f"{path}: defaults must be an object, not {defaults!r}")
    for key, v in defaults.items():
        if key not in ("tolerance", "k"):
            raise BaselineError(f"{path}: defaults.{key} is no setting of a baseline (tolerance, k)")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise BaselineError(f"{path}: defaults.{key} must be a finite number >= 0, not {v!r}")
    known = obj.get("settings", {})
    if not isinstance(known, dict) or not all(isinstance(v, dict) for v in known.values()):
        raise BaselineError(f"{path}: settings must map digests to the protocol settings they stand for")
    entries = obj.get("entries")
    if not isinstance(entries, list) or not entries:
        # A gate that checks nothing must not pass.
        raise BaselineError(f"{path}: the baseline has no entries, so it would check nothing")
    for i, e in enumerate(entries):
        if (why := entry_problem(e)):
            name = f" ({e.get('checkpoint')}, {e.get('task')})" if isinstance(e, dict) else ""
            raise BaselineError(f"{path}: entry {i}{name}: {why}")
    return obj


ENTRY_KEYS = {"checkpoint", "task", "protocol", "metric", "value", "tolerance", "std", "k", "n",
              "dataset", "engine", "relative_to", "direction", "runs", "cell_seeds", "settings"}


def entry_problem(e: Any) -> str | None:
    """Why ``e`` is no usable baseline entry (None when it is one). Every field is checked: the
    names are non-empty strings, the numbers finite, the value a metric's (``relative_to``: a
    difference of two)."""
    if not isinstance(e, dict):
        return "not an object"
    missing = [k for k in ("checkpoint", "task", "protocol", "metric", "value") if k not in e]
    if missing:
        return f"lacks {', '.join(missing)}"
    unknown = sorted(set(e) - ENTRY_KEYS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(ENTRY_KEYS))})"
    for key in ("checkpoint", "task", "protocol", "metric", "dataset", "engine", "relative_to", "settings"):
        v = e.get(key)
        if (v is not None or key in ("checkpoint", "task", "protocol", "metric")) and not (isinstance(v, str) and v):
            return f"{key} must be a non-empty string, not {v!r}"
    if e["task"] not in TASKS:
        return f"unknown task {e['task']!r} (known: {', '.join(TASKS)})"
    if e.get("direction", "higher") not in ("higher", "lower"):
        return f"direction must be 'higher' or 'lower', not {e['direction']!r}"
    for key in ("value", "tolerance", "std", "k", "n"):
        v = e.get(key)
        if key != "value" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{key} must be a finite number, not {v!r}"
        if key != "value" and v < 0:
            return f"{key} must be >= 0, not {v!r}"
    if e.get("n") is not None and (e["n"] != int(e["n"]) or e["n"] < 1):
        return f"n must be a whole number >= 1, not {e['n']!r}"
    cs = e.get("cell_seeds")
    if cs is not None and (isinstance(cs, bool) or not isinstance(cs, int) or cs < 1):
        return f"cell_seeds must be a whole number >= 1, not {cs!r}"
    if e.get("relative_to"):
        if not -100.0 <= e["value"] <= 100.0:
            return f"value {e['value']!r} is no difference of two percentages (outside [-100, 100])"
    elif (why := metric_problem(e["metric"], e["value"])):
        return why
    runs = e.get("runs")
    if runs is not None and (not isinstance(runs, list) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in runs)):
        return f"runs must be a list of finite numbers, not {runs!r}"
    return None


def _find(table: Table, entry: dict, checkpoint: str):
    """The (row, column) cells of ``table`` that ``entry`` names for ``checkpoint``."""
    rows = [r for r in table.measured_rows() if r.name == checkpoint]
    cols = [c for c in table.columns if entry_names(entry, c)]
    return [(r, c) for r in rows for c in cols if table.cell(r, c) is not None]


def _refused(table: Table, entry: dict, checkpoint: str) -> str | None:
    """The reason a record that would fill ``entry``'s cell was refused (a NaN or out-of-range
    metric, a missing field), naming its file; None when no such record was read."""
    for message, rec in table.refused:
        if not isinstance(rec.get("checkpoint"), dict):
            continue
        try:
            same = (checkpoint_display_name(rec["checkpoint"]) == checkpoint and rec.get("task") == entry["task"]
                    and str(rec.get("protocol")) == entry["protocol"])
        except Exception:  # noqa: BLE001 - a refused record may be malformed in any way
            continue
        if same:
            return f"its record was refused: {message}"
    return None


def _table_error(table: Table, row, col) -> str | None:
    marker = f"cell ({row.key}, {col.task} [{col.protocol}] on {col.dataset}, engine {col.engine})"
    return next((e for e in table.errors if marker in e), None)


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _seed_gap(table: Table, row, col) -> str | None:
    """Seeds whose evaluation measured this cell's task but whose record lacks its metric: the
    cell's mean would silently be over fewer seeds than its sibling metrics'."""
    mine = table.cell(row, col)
    others: set = set()
    for c in table.columns:
        same_eval = (c.task, c.protocol, c.dataset, c.engine) == (col.task, col.protocol, col.dataset, col.engine)
        if same_eval and c != col and (cell := table.cell(row, c)) is not None:
            others.update(cell.seeds)
    gap = sorted(others - set(mine.seeds), key=str)
    if gap:
        return (f"seed(s) {', '.join(map(str, gap))} of {row.name}'s {col.task} [{col.protocol}] have no "
                f"{col.metric!r} in their record, which the other seeds have")
    return None


def _cell_problem(table: Table, row, col, entry: dict, known: dict) -> str | None:
    """Why the cell that ``entry`` names cannot be compared with it: an error of the table in it,
    a seed that lacks the metric, another number of seeds or other protocol settings than the
    baseline's cell."""
    if (err := _table_error(table, row, col)) or (err := _seed_gap(table, row, col)):
        return err
    cell = table.cell(row, col)
    want = entry.get("cell_seeds")
    if want is not None and cell.n != want:
        return (f"{row.name}'s cell holds {cell.n} seed(s) ({', '.join(map(str, cell.seeds))}), the baseline's "
                f"{want}: the mean of other seeds is no comparison")
    digest = entry.get("settings")
    if digest is not None and settings_digest(cell.settings) != digest:
        if digest in known:
            diffs = [f"{k} = {json.dumps(cell.settings.get(k, '<absent>'))}, the baseline's "
                     f"{json.dumps(known[digest].get(k, '<absent>'))}"
                     for k in sorted(set(cell.settings) | set(known[digest]))
                     if cell.settings.get(k, "<absent>") != known[digest].get(k, "<absent>")]
            what = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")
        else:
            what = f"settings digest {settings_digest(cell.settings)}, the baseline's {digest}"
        return (f"{row.name}'s records ran other protocol settings than the baseline's ({what}); re-run "
                "them with the baseline's settings, or record a new baseline with --update-baseline")
    return None


def allowed_drop(entry: dict, defaults: dict) -> float:
    k = entry.get("k")
    std, n = entry.get("std"), entry.get("n") or 1
    if k is not None and std and n >= 2:
        return float(k) * float(std)
    return float(entry.get("tolerance", defaults.get("tolerance", DEFAULT_TOLERANCE)))


def evaluate(entry: dict, table: Table, defaults: dict, known: dict | None = None) -> Outcome:
    """``entry`` against ``table``; ``known``: the baseline's settings by digest, to name what changed."""
    allowed = allowed_drop(entry, defaults)
    name = entry["checkpoint"]
    found = _find(table, entry, name)
    if not found:
        return Outcome(entry, None, allowed, "MISSING", _refused(table, entry, name) or "no current result")
    if len(found) > 1:
        cols = ", ".join(c.label for _, c in found)
        return Outcome(entry, None, allowed, "ERROR", f"ambiguous: several columns match ({cols}); "
                       "add dataset/engine to the entry")
    row, col = found[0]
    if (err := _cell_problem(table, row, col, entry, known or {})):
        return Outcome(entry, None, allowed, "ERROR", err)
    current = table.cell(row, col).mean
    if entry.get("relative_to"):
        ref_rows = [r for r in table.measured_rows() if r.name == entry["relative_to"]]
        ref = table.cell(ref_rows[0], col) if ref_rows else None
        if ref is None:
            return Outcome(entry, None, allowed, "MISSING",
                           _refused(table, entry, entry["relative_to"])
                           or f"no current result for the reference {entry['relative_to']!r}")
        # the reference's cell is held to the same rules (its settings are its own protocol's)
        if (err := _cell_problem(table, ref_rows[0], col, {"cell_seeds": entry.get("cell_seeds")}, {})):
            return Outcome(entry, None, allowed, "ERROR", f"reference {entry['relative_to']!r}: {err}")
        # a difference between cells that ran other settings (another k, T, lr) measures the settings
        if (differ := settings_differences(table.cell(row, col).settings, ref.settings, entry["relative_to"])):
            return Outcome(entry, None, allowed, "ERROR",
                           f"{name} and its reference {entry['relative_to']!r} ran other protocol settings "
                           f"({differ}): their difference is no comparison; re-run one with the other's settings")
        current = current - ref.mean
    if not math.isfinite(current):   # NaN passes every comparison below: never "ok"
        return Outcome(entry, None, allowed, "ERROR", f"the current value is {current!r}, not a number")
    sign = -1.0 if entry.get("direction") == "lower" else 1.0
    change = sign * (current - float(entry["value"]))
    status = "REGRESSED" if change < -allowed - 1e-9 else "improved" if change > allowed + 1e-9 else "ok"
    return Outcome(entry, current, allowed, status)


def check(table: Table, baseline: dict) -> list[Outcome]:
    defaults = baseline.get("defaults") or {}
    known = baseline.get("settings") or {}
    return [evaluate(e, table, defaults, known) for e in baseline.get("entries", [])]


def _entry_name(e: dict) -> str:
    rel = f" - {e['relative_to']}" if e.get("relative_to") else ""
    return f"{e['checkpoint']}{rel}"


def format_outcomes(outcomes: list[Outcome], *, only_moved: bool = True) -> str:
    # "moved": beyond the baseline's rounding (values are stored with 4 decimals)
    shown = [o for o in outcomes
             if not only_moved or o.failed or o.status == "improved" or (o.delta and abs(o.delta) >= 0.005)]
    head = ("checkpoint", "task", "protocol", "metric", "baseline", "current", "delta", "allowed", "status")
    lines = []
    for o in shown:
        e = o.entry
        lines.append((_entry_name(e), e["task"], e["protocol"], e["metric"], f"{float(e['value']):.2f}",
                      "-" if o.current is None else f"{o.current:.2f}",
                      "-" if o.delta is None else f"{o.delta:+.2f}", f"±{o.allowed:.2f}",
                      o.status + (f" ({o.detail})" if o.detail else "")))
    if not lines:
        return "nothing moved"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*line) for line in lines])


MEASURED_WITH = ("cell_seeds", "settings")   # what an update measures anew, never carries over


def _measured_with(table: Table, entry: dict) -> tuple[dict, dict]:
    """The current value of ``entry`` for a new baseline: ``(entry with value, n, std, cell_seeds and
    settings of now, {digest: settings})``. An entry the records cannot give (an error in its cell,
    or none) is refused: an update must not drop a gate or carry a broken one over."""
    bare = {"value": 0.0} | {k: v for k, v in entry.items() if k not in MEASURED_WITH}   # value: unused here
    o = evaluate(bare, table, {})
    if o.current is None:
        raise BaselineError(f"no result for the entry {_entry_name(entry)} {entry['task']} [{entry['protocol']}] "
                            f"{entry['metric']}: {o.status} ({o.detail})")
    row, col = _find(table, entry, entry["checkpoint"])[0]
    cell = table.cell(row, col)
    digest = settings_digest(cell.settings)
    upd = dict(entry, value=round(o.current, 4), cell_seeds=cell.n, settings=digest)
    if not entry.get("relative_to"):
        upd.update(n=cell.n, std=None if cell.std is None else round(cell.std, 4))
    return upd, {digest: cell.settings}


def _refuse_broken(table: Table, where: str) -> None:
    problems = list(table.errors) + list(table.problems)
    if problems:
        raise BaselineError(f"{where}: not written: the records are not all usable: {problems[0]}"
                            + (f" (and {len(problems) - 1} more)" if problems[1:] else ""))


def new_baseline(table: Table, old: dict | None = None, *, note: str = "", where: str = "the results") -> dict:
    """A baseline from the table's measured cells. Entries of ``old`` keep their settings
    (tolerance, k, relative_to, direction) with updated values; cells ``old`` lacks are added
    with the default tolerance (and ``k`` when they have several seeds). Refused (BaselineError)
    when a record was skipped, a cell is in error, or an entry of ``old`` has no result."""
    _refuse_broken(table, where)
    defaults = (old or {}).get("defaults") or {"tolerance": DEFAULT_TOLERANCE, "k": DEFAULT_K}
    entries, seen, known = [], set(), {}
    for e in (old or {}).get("entries", []):
        upd, settings = _measured_with(table, e)
        entries.append(upd)
        known.update(settings)
        if not e.get("relative_to"):
            row, col = _find(table, e, e["checkpoint"])[0]
            seen.add((row.name, col))
    for row in table.measured_rows():
        for col in table.columns:
            cell = table.cell(row, col)
            if cell is None or (row.name, col) in seen or col.metric not in DISPLAY_METRICS.get(col.task, ()):
                continue
            e: dict[str, Any] = {"checkpoint": row.name, "task": col.task, "protocol": col.protocol,
                                 "dataset": col.dataset, "engine": col.engine, "metric": col.metric,
                                 "tolerance": defaults.get("tolerance", DEFAULT_TOLERANCE)}
            if cell.n >= 2:
                e["k"] = defaults.get("k", DEFAULT_K)
            upd, settings = _measured_with(table, e)
            entries.append(upd)
            known.update(settings)
    return {"format": BASELINE_FORMAT, "version": BASELINE_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(), "note": note or (old or {}).get("note", ""),
            "defaults": defaults, "settings": known, "entries": entries}


def baseline_from_runs(tables: list[Table], old: dict, *, sources: list[str] | None = None) -> dict:
    """The entries of ``old`` measured again in several runs of the same pipeline (one table per
    run, each with another seed): each entry's ``value`` is the mean of the runs' values (for a
    ``relative_to`` entry, of each run's difference), ``std`` and ``n`` their spread, ``runs`` the
    values themselves; its allowed drop is then ``k x std`` (see :func:`allowed_drop`). An entry
    some run lacks is an error: the spread would be measured on fewer runs than claimed; so is a
    cell whose seeds or protocol settings differ between the runs."""
    import statistics

    defaults = old.get("defaults") or {"tolerance": DEFAULT_TOLERANCE, "k": DEFAULT_K}
    names = sources or [f"run {i + 1}" for i in range(len(tables))]
    for t, where in zip(tables, names):
        _refuse_broken(t, where)
    entries, known = [], {}
    for e in old["entries"]:
        measured = []
        for t, where in zip(tables, names):
            try:
                measured.append(_measured_with(t, e))
            except BaselineError as err:
                raise BaselineError(f"{where}: {err}") from None
        firsts = {(upd["cell_seeds"], upd["settings"]) for upd, _ in measured}
        if len(firsts) > 1:
            raise BaselineError(f"the runs measured {_entry_name(e)} {e['task']} [{e['protocol']}] {e['metric']} "
                                f"with other seeds or settings: (seeds, settings digest) {sorted(firsts)}")
        values = [upd["value"] for upd, _ in measured]
        upd, settings = measured[0]
        known.update(settings)
        entries.append(dict(e, value=round(statistics.fmean(values), 4), n=len(values),
                            std=round(statistics.stdev(values), 4) if len(values) > 1 else None,
                            runs=[round(v, 4) for v in values], cell_seeds=upd["cell_seeds"],
                            settings=upd["settings"]))
    return {"format": BASELINE_FORMAT, "version": BASELINE_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(), "note": old.get("note", ""), "defaults": defaults,
            "settings": known, "entries": entries}


def check_new_baseline(baseline: dict, where: str | Path) -> None:
    """Refuse to write a baseline the next check would refuse (a NaN value, above all)."""
    for i, e in enumerate(baseline["entries"]):
        if (why := entry_problem(e)):
            raise BaselineError(f"{where}: not written: entry {i} ({e.get('checkpoint')}, {e.get('task')}): {why}")


def update_from_runs(baseline_path: str | Path, results_dirs: list[str | Path], out=print) -> int:
    """``leaderboard check --update-baseline --results R1 --results R2 ...``: the entries of the
    existing baseline, measured in every run (see :func:`baseline_from_runs`)."""
    from mocobench.core.io import atomic_write_json

    old = read_baseline(baseline_path)
    tables = [load_table(d, reported=False, all_metrics=True) for d in results_dirs]
    try:
        new = baseline_from_runs(tables, old, sources=[str(d) for d in results_dirs])
    except BaselineError as e:   # the records', not the baseline's, fault
        out(str(e))
        return 1
    check_new_baseline(new, baseline_path)
    atomic_write_json(baseline_path, new)
    widest = max(new["entries"], key=lambda e: (e["std"] or 0))
    out(f"wrote {baseline_path} ({len(new['entries'])} entries, each measured in {len(tables)} runs; "
        f"largest spread: {_entry_name(widest)} {widest['task']} {widest['metric']} std {widest['std']})")
    return 0


def run_check(baseline_path: str | Path, results_dir: str | Path, *, update: bool = False,
              out=print) -> int:
    """What ``mocobench leaderboard check`` does; returns the exit code."""
    from mocobench.core.io import atomic_write_json

    table = load_table(results_dir, reported=False, all_metrics=True)
    # A record the table had to skip (corrupt, NaN, a field of the wrong type) fails the gate: the
    # cells it belonged to would otherwise pass on the seeds that remain.
    for p in table.problems:
        out(f"error: {p}")
    baseline_path = Path(baseline_path)
    old = read_baseline(baseline_path) if (baseline_path.exists() or not update) else None
    if update:
        try:
            new = new_baseline(table, old, where=str(baseline_path))
        except BaselineError as e:   # the records', not the baseline's, fault: a failure, not a usage error
            out(str(e))
            return 1
        if not new["entries"]:
            out(f"no measured results under {results_dir}: baseline not written")
            return 1
        check_new_baseline(new, baseline_path)
        atomic_write_json(baseline_path, new)
        out(f"wrote {baseline_path} ({len(new['entries'])} entries from {results_dir})")
        return 0
    outcomes = check(table, old)
    out(format_outcomes(outcomes))
    failed = [o for o in outcomes if o.failed]
    improved = [o for o in outcomes if o.status == "improved"]
    out(f"{len(outcomes)} baseline entries: {len(outcomes) - len(failed) - len(improved)} ok, "
        f"{len(improved)} improved, {len(failed)} failed"
        + (" (run with --update-baseline to record the improvements)" if improved and not failed else "")
        + (f"; {len(table.problems)} record file(s) skipped (above): failed" if table.problems else ""))
    return 1 if failed or table.problems else 0


def run_against_paper(results: str | Path, out=print) -> int:
    """``leaderboard check --against-paper``: each measured cell that has a paper number in its
    column (table.compare_with_papers) against its band; 0 when every one lies within, 1 when one
    does not, when none can be compared (a gate that checks nothing fails), or when the records
    cannot make a table."""
    from mocobench.leaderboard.table import TableError, check_table

    results = Path(results)
    if not results.is_dir():
        out(f"{results}: no such results folder")
        return 1
    try:
        table = load_table(results)
        check_table(table)
    except TableError as e:
        out(str(e))
        return 1
    for (key, col), (paper, differ) in sorted(table.uncompared.items(), key=lambda kv: (kv[0][0], kv[0][1].sort_key())):
        out(f"{key} {col.label}: NOT COMPARED with {paper}: its records ran other settings than the "
            f"{col.protocol} preset that row stands for ({differ})")
    if not table.comparisons:
        out(f"{results}: no measured cell shares a column with a paper row (same method, arch, epochs and "
            "label fraction, same task, protocol, dataset, engine and metric) and ran the preset it stands for: "
            "nothing was checked")
        return 1
    outside = 0
    for (key, col), c in sorted(table.comparisons.items(), key=lambda kv: (kv[0][0], kv[0][1].sort_key())):
        outside += not c.within
        unstated = table.cell(key, col).preset_changes is None
        out(f"{key} {col.label}: {c.measured:.2f} vs {c.paper} {c.reported:g}: Δ {c.delta:+.2f}, band "
            f"±{c.band:.2f}: {'within' if c.within else 'OUTSIDE'}"
            + (" (its records do not state whether they ran the preset)" if unstated else ""))
    out(f"{len(table.comparisons) - outside} within their band, {outside} outside")
    return 1 if outside else 0

