"""A self-contained HTML page of the leaderboard: inline CSS and JS, plots as inline SVG.

Nothing is loaded from the network: the page opens from a file on a machine with no internet.
Every table cell carries its numbers as data attributes (``data-mean``, ``data-std``, ``data-n``)
so the page sorts numerically and tests can read the values back with ``html.parser``.
"""

from __future__ import annotations

import html
import io
from datetime import datetime, timezone

from mocobench.leaderboard.table import NOISE_FOOTNOTE, Column, Row, Table

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.meta{color:#5a6475;font-size:12.5px}
.controls{margin:10px 0;font-size:13px} .controls label{margin-right:14px}
.wrap{overflow-x:auto;border:1px solid #dde2ea;border-radius:6px}
table.lb{border-collapse:collapse;font-size:12.5px;white-space:nowrap}
table.lb th,table.lb td{padding:4px 8px;border-bottom:1px solid #eef1f5}
table.lb th{background:#f4f6f9;position:sticky;top:0;cursor:pointer;text-align:center;vertical-align:bottom;
 white-space:normal;min-width:64px;max-width:130px;font-weight:600}
table.lb th.sorted-asc::after{content:" \\25B2"} table.lb th.sorted-desc::after{content:" \\25BC"}
table.lb td.num{text-align:right;font-variant-numeric:tabular-nums}
table.lb td.best{font-weight:700}
table.lb td.outband{color:#b00020}
table.lb td.noise{color:#8a8f99;text-decoration:underline dotted} table.lb td.nospread{color:#8a8f99}
tr.reported td{background:#fafbfd;color:#4a5263;font-style:italic}
tr.unverified td{background:#fff8ec;color:#7a5a1e;font-style:italic}
.badge{display:inline-block;font-size:10.5px;font-style:normal;padding:0 5px;border-radius:8px;margin-left:4px}
.badge.measured{background:#dff3e4;color:#1f6b35} .badge.reported{background:#e6ebf5;color:#334a7a}
.badge.unverified{background:#fbe3c2;color:#8a5300}
.plots{display:flex;flex-wrap:wrap;gap:14px} .plot{border:1px solid #dde2ea;border-radius:6px;padding:6px}
.plot svg{display:block;max-width:100%;height:auto}
ul.src{font-size:12.5px;color:#4a5263} .problems{color:#9b1c1c}
"""

# Click a header to sort by it (numbers by data-mean, text otherwise); empty cells go last.
JS = """
document.querySelectorAll('table.lb').forEach(function(table){
  var heads = table.querySelectorAll('thead th');
  heads.forEach(function(th, idx){
    th.addEventListener('click', function(){
      var desc = !th.classList.contains('sorted-desc');
      heads.forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(desc ? 'sorted-desc' : 'sorted-asc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[idx], y = b.cells[idx];
        var xv = x.dataset.mean, yv = y.dataset.mean;
        if (xv !== undefined || yv !== undefined) {
          if (xv === undefined) return 1; if (yv === undefined) return -1;
          return desc ? yv - xv : xv - yv;
        }
        var c = x.textContent.localeCompare(y.textContent, undefined, {numeric: true});
        return desc ? -c : c;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
function showKind(kind, on){
  document.querySelectorAll('tr.' + kind).forEach(function(r){ r.style.display = on ? '' : 'none'; });
}
"""

ROW_HEADS = ("checkpoint", "method", "arch", "epochs", "labels")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _row_cells(row: Row) -> list[str]:
    badge = f'<span class="badge {row.kind}">{row.kind}</span>'
    tip = row.source or row.card   # reported: where the numbers come from; measured: the checkpoint card
    title = f' title="{_e(tip)}"' if tip else ""
    return [f"<td{title}>{_e(row.name)}{badge}</td>", f"<td>{_e(row.method or '')}</td>",
            f"<td>{_e(row.arch or '')}</td>",
            f'<td class="num">{"" if row.epochs is None else row.epochs}</td>',
            f'<td class="num" data-mean="{row.label_fraction}">{row.label_fraction_text}</td>'
            if row.label_fraction is not None else "<td></td>"]


def _plain(text: str) -> str:
    """``text`` for matplotlib, which reads a pair of ``$`` as TeX (and fails on a malformed one)."""
    return text.replace("$", r"\$")


def table_html(table: Table, table_id: str = "leaderboard") -> str:
    best = {}
    for col in table.columns:
        vals = [c.mean for r in table.measured_rows() if (c := table.cell(r, col))]
        if len(vals) > 1:
            best[col] = max(vals)
    head = "".join(f"<th>{h}</th>" for h in ROW_HEADS)
    labels = table.labels()
    head += "".join(f'<th title="{_e(labels[c])}" data-task="{_e(c.task)}" data-protocol="{_e(c.protocol)}" '
                    f'data-dataset="{_e(c.dataset)}" data-engine="{_e(c.engine)}" data-metric="{_e(c.metric)}">'
                    f"{_e(labels[c])}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        tds = _row_cells(row)
        for col in table.columns:
            cell = table.cell(row, col)
            if cell is None:
                tds.append('<td class="num"></td>')
                continue
            tip = (f"n={cell.n}; seeds {cell.seeds}; " + "; ".join(cell.files)) if row.kind == "measured" \
                else cell.source
            cls = "num best" if best.get(col) == cell.mean and row.kind == "measured" else "num"
            std = "" if cell.std is None else f' data-std="{cell.std!r}"'
            if cell.deviations:
                tip += "; departures from the official recipe: " + "; ".join(cell.deviations)
            text, cmp = cell.text() + (" †" if cell.deviations else ""), table.comparisons.get((row.key, col))
            if (noise := table.noise.get((row.key, col))) is not None:   # against random init
                tip += f"; {noise.text(2)}"
                text += f" {noise.mark}" if noise.mark else ""
                cls += {"within noise": " noise", "spread unknown": " nospread",
                        "no random init": " nospread", "settings differ": " nospread"}.get(noise.verdict, "")
            if cmp is not None:   # against the paper row in this column: shown, and its grounds on hover
                tip += f"; vs {cmp.paper} {cmp.reported:g}: {cmp.text(2)}"
                text += f" · {cmp.text()}"
                cls += " inband" if cmp.within else " outband"
                std += f' data-delta="{cmp.delta!r}" data-band="{cmp.band!r}"'
            if (paper := table.uncompared.get((row.key, col))) is not None:   # ran other settings than the preset
                tip += f"; not compared with {paper[0]}: ran other settings than its protocol's preset ({paper[1]})"
                text += " · Δ ‡"
                cls += " nospread"
            tds.append(f'<td class="{cls}" data-mean="{cell.mean!r}"{std} data-n="{cell.n}" '
                       f'title="{_e(tip)}">{_e(text)}</td>')
        body.append(f'<tr class="{row.kind}" data-row="{_e(row.key)}">' + "".join(tds) + "</tr>")
    return (f'<div class="wrap"><table class="lb" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


# ---------------------------------------------------------------- plots

def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]   # drop the XML prolog and doctype; inline SVG needs neither


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "mocobench", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


COLORS = ["#3b6fb6", "#e07b39", "#4c9a52", "#b5495b", "#7a5cb0", "#8c6d46", "#3aa0a8", "#c2a63a"]


def bar_plots(table: Table) -> list[tuple[str, str]]:
    """One figure per (task, dataset, protocol, engine) that has measured values: bars per
    checkpoint, grouped by metric, error bars = std over seeds (or the paper's ±). Reported rows
    in the same columns are drawn hatched beside the measured ones; columns with reported values
    only are left to the table (and the UniMoCo plot)."""
    plt = _plt()
    figures = []
    key = lambda c: (c.task, c.dataset, c.protocol, c.engine)  # noqa: E731
    ordered = sorted(table.columns, key=Column.sort_key)
    groups: dict[tuple, list[Column]] = {}
    for c in ordered:
        groups.setdefault(key(c), []).append(c)
    for gkey, cols in groups.items():
        rows = [r for r in table.rows if any(table.cell(r, c) for c in cols)]
        if not any(r.kind == "measured" for r in rows):
            continue
        width = 0.8 / max(1, len(cols))
        fig, ax = plt.subplots(figsize=(max(3.6, 0.55 * len(rows) * max(1, len(cols)) + 1.4), 3.0))
        for j, col in enumerate(cols):
            for i, row in enumerate(rows):
                cell = table.cell(row, col)
                if cell is None:
                    continue
                x = i + (j - (len(cols) - 1) / 2) * width
                ax.bar(x, cell.mean, width * 0.92, yerr=cell.std or 0.0, capsize=3,
                       color=COLORS[j % len(COLORS)], alpha=1.0 if row.kind == "measured" else 0.45,
                       hatch=None if row.kind == "measured" else "//", edgecolor="#333" if row.kind != "measured" else None,
                       label=col.metric)
                ax.text(x, cell.mean, f"{cell.mean:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([_plain(r.name) + ("" if r.kind == "measured" else f"\n({r.kind})") for r in rows],
                           rotation=30, ha="right", fontsize=7.5)
        task, dataset, protocol, engine = gkey
        ax.set_title(_plain(cols[0].label.rsplit(" [", 1)[0].rsplit(" ", 1)[0] + f"  [{protocol}, {engine}]"),
                     fontsize=9)
        ax.set_ylabel(" / ".join(c.metric for c in cols) + " (%)")
        if len(cols) > 1:
            handles, labels = ax.get_legend_handles_labels()
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, frameon=False)
        figures.append((" ".join(map(str, gkey)), _svg(fig)))
    return figures


def unimoco_plot(table: Table) -> str | None:
    """UniMoCo's accuracy against its label fraction: one line per classification column that
    has UniMoCo rows at two or more label fractions (measured solid, reported dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    lines = 0
    for i, col in enumerate(c for c in table.columns
                            if c.task in ("linear", "knn", "semi-1pct", "semi-10pct") and c.metric == "top1"):
        for kind in ("measured", "reported"):
            pts = sorted((r.label_fraction, cell.mean, cell.std or 0.0) for r in table.rows
                         if r.method == "unimoco" and r.label_fraction is not None
                         and (r.kind == "measured") == (kind == "measured") and (cell := table.cell(r, col)))
            if len(pts) < 2:
                continue
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=COLORS[i % len(COLORS)],
                        linestyle="-" if kind == "measured" else "--",
                        label=_plain(col.label) + (" (reported)" if kind != "measured" else ""))
            lines += 1
    if not lines:
        plt.close(fig)
        return None
    ax.set_xlabel("labeled fraction of the pretraining set (%)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("UniMoCo: accuracy vs label fraction", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="best")
    return _svg(fig)


# ---------------------------------------------------------------- page

def render(table: Table, *, title: str = "mocobench leaderboard", results_dir: str = "",
           plots: bool = True) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_meas, n_rep = len(table.measured_rows()), len(table.reported_rows())
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
             f'<div class="meta">generated {now} from {_e(results_dir) or "records"}: {n_meas} measured '
             f"checkpoints, {n_rep} reported rows. Cells are mean ± sample std (n seeds). Each column is one "
             "(task, protocol, dataset, engine, metric): columns never mix them. Bold: best measured value "
             "in its column. Click a header to sort.</div>"]
    if table.problems:
        parts.append('<h2>Skipped record files</h2><ul class="problems">'
                     + "".join(f"<li>{_e(p)}</li>" for p in table.problems) + "</ul>")
    if table.errors:
        parts.append('<h2>Protocol mismatches</h2><ul class="problems">'
                     + "".join(f"<li>{_e(p)}</li>" for p in table.errors) + "</ul>")
    parts.append('<h2>Table: measured versus reported</h2><div class="controls">'
                 '<label><input type="checkbox" checked onchange="showKind(\'measured\', this.checked)"> measured</label>'
                 '<label><input type="checkbox" checked onchange="showKind(\'reported\', this.checked)"> reported</label>'
                 '<label><input type="checkbox" checked onchange="showKind(\'unverified\', this.checked)"> '
                 "unverified (reported, source not checked)</label></div>")
    parts.append(table_html(table))
    if table.noise:
        parts.append(f'<div class="meta">{_e(NOISE_FOOTNOTE)} Hover a cell for its figures.</div>')
    uni = unimoco_plot(table) if plots else None
    if uni:
        parts.append(f'<h2>UniMoCo: accuracy against label fraction</h2><div class="plots"><div class="plot">{uni}</div></div>')
    bars = bar_plots(table) if plots else []
    if bars:
        parts.append('<h2>Per task</h2><div class="plots">'
                     + "".join(f'<div class="plot" data-group="{_e(k)}">{svg}</div>' for k, svg in bars) + "</div>")
    srcs = [(r.name, r.kind, r.source) for r in table.reported_rows()]
    if srcs:
        unverified = ' <span class="badge unverified">unverified</span>'
        parts.append('<h2>Sources of the reported rows</h2><ul class="src">'
                     + "".join(f"<li><b>{_e(n)}</b>{unverified if k == 'unverified' else ''}: {_e(s)}</li>"
                               for n, k, s in srcs) + "</ul>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)
