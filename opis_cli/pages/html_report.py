"""``opis report``: one self-contained HTML page of one or more saved runs.

Everything is inside the file (CSS, a small script, the figures as data: URLs, the class tables as
JSON), so it opens offline and can be attached to a ticket or a pull request. Per run: the summary
figures with their intervals, the utility-curve plot, the distance distributions, the ROC/DET
curves (runs with --eer), the TAR at fixed FARs, margins and groups where the run has them, and
every class in a table sortable by each column and filterable by label. With several runs, first
a comparison: the side-by-side figures and their changes against the first run
(verdicts/compare.py), the curves side by side and the Pareto plot.

Size: figures are SVG up to SVG_MAX_CLASSES classes and PNG beyond (a curve per class in SVG grows
with the classes); the class tables are compact JSON rendered by the script, at most
ROWS_SHOWN rows at a time (the filter and the sort see every class). A 100,000-class run stays
under 10 MB (tests/test_report_page.py). The same runs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from opis_cli import __version__
from opis_cli.errors import ConfigError, InputError
from opis_cli.report.runs import SavedRun, atomic_write_text

SVG_MAX_CLASSES = 2000
ROWS_SHOWN = 1000


def write_report_page(runs: list[SavedRun], out: str | Path, *, title: str | None = None) -> Path:
    """Write :func:`report_page` of ``runs`` to ``out`` (an .html path) atomically."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out {out.name!r}: the report is an HTML page; use a .html path")
    atomic_write_text(out, report_page(runs, title=title))
    return out


def report_page(runs: list[SavedRun], *, title: str | None = None) -> str:
    """The page's HTML text (module docstring)."""
    if not runs:
        raise InputError("no runs to report")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two runs are named alike ({', '.join(names)}): pass run directories with distinct names")
    title = title or ("opis-cli report: " + ", ".join(names))
    body = [f"<h1>{_e(title)}</h1>",
            f"<p class=\"meta\">opis-cli {_e(__version__)} &middot; {len(runs)} run{'s' if len(runs) > 1 else ''}"
            " &middot; definitions: docs/definitions.md</p>"]
    if len(runs) > 1:
        body.append(_comparison(runs))
    body += [_run_section(run, i) for i, run in enumerate(runs)]
    script = SCRIPT.replace("LIMIT = ROWS", f"LIMIT = {ROWS_SHOWN}")
    return PAGE.format(title=_e(title), css=CSS, body="\n".join(body), script=script)


# ----------------------------------------------------------------------------------- sections
def _comparison(runs: list[SavedRun]) -> str:
    from opis_cli.verdicts.compare import compare_runs

    result = compare_runs(runs)
    header, rows = result.table()
    parts = ["<section><h2>Comparison</h2>",
             f"<p>Changes are against <b>{_e(runs[0].name)}</b>; intervals are 95% (paired: the class "
             "bootstrap of both runs on the same classes).</p>", _table(header, rows)]
    parts += [f"<p class=\"warning\">warning: {_e(w)}</p>" for w in result.warnings]
    if all(r.utility is not None for r in runs):
        parts.append(_figure(runs, "compare", "Per-class utility against the threshold, side by side"))
    if all(r.report["metrics"].get("recall_at_k", {}).get("1") is not None for r in runs):
        parts.append(_figure(runs, "pareto", "OPIS against recognition error (1 - Recall@1)"))
    return "\n".join(parts) + "</section>"


def _run_section(run: SavedRun, index: int) -> str:
    r = run.report
    parts = [f"<section id=\"run-{index}\"><h2>{_e(run.name)}</h2>", _table(["", ""], _summary(r), cls="summary")]
    if run.utility is not None:
        parts.append(_figure([run], "curves", "Per-class utility against the threshold (top axis: pooled FAR)"))
    if run.distributions is not None:
        parts.append(_figure([run], "distributions", "Positive and negative pair distances"))
    if run.rates is not None:
        parts.append(_figure([run], "det", "DET: false rejects against false accepts (--eer)"))
    for key, render in (("tar_at_far", _tar_at_far), ("margins", _margins), ("groups", _groups)):
        if r.get(key):
            parts.append(render(r[key]))
    parts.append(_class_table(r, index))
    return "\n".join(parts) + "</section>"


def _summary(r: dict) -> list[list[str]]:
    inp, cal, m = r["input"], r["calibration"], r["metrics"]
    boot, err = r.get("bootstrap") or {}, (r.get("approximation") or {}).get("errors", {})

    def with_intervals(value: float, e: dict | None, b: dict | None) -> str:
        text = f"{value:.6g}"
        if e:
            text += f" [{e['interval'][0]:.4g}, {e['interval'][1]:.4g}] (95%, approximate)"
        if b:
            text += f" [{b['interval'][0]:.4g}, {b['interval'][1]:.4g}] (95%, classes)"
        return text

    ref = inp.get("reference")
    rows = [["embeddings", f"{inp['n']:,} x {inp['d']}" + (f" queries, {ref['n']:,} references" if ref else "")],
            ["classes used / skipped", f"{inp['classes_used']:,} / {inp.get('classes_skipped', 0):,}"],
            ["metric", r["config"]["metric"]],
            ["calibration range", f"[{cal['lo']:.6g}, {cal['hi']:.6g}] ({cal['thresholds']} thresholds)"]]
    if "far_at_lo" in cal:
        rows.append(["pooled FAR at lo / hi", f"{cal['far_at_lo']:.4g} / {cal['far_at_hi']:.4g}"])
    rows.append(["engine", (r.get("engine") or {}).get("name", "exact")])
    rows.append(["OPIS", with_intervals(m["opis"], err.get("opis"), boot.get("opis"))])
    rows.append([f"eps-OPIS (eps={r['config']['epsilon']:g}, vs {m.get('eps_contrast', 'rest')})",
                 with_intervals(m["eps_opis"], err.get("eps_opis"), boot.get("eps_opis"))])
    for k, v in sorted(m.get("recall_at_k", {}).items(), key=lambda kv: int(kv[0])):
        rows.append([f"Recall@{k}", with_intervals(v, err.get("recall_at_k", {}).get(k),
                                                   boot.get("recall_at_k", {}).get(k))])
    if m.get("map_at_r") is not None:
        rows.append(["MAP@R / R-precision", f"{m['map_at_r']:.4f} / {m['r_precision']:.4f} ({m['queries']:,} queries)"])
    if m.get("eer"):
        e = m["eer"]
        rows.append(["EER (pooled)", f"{e['eer']:.4g} at d = {e['threshold']:.4g}, between {e['interval'][0]:.4g} and "
                                     f"{e['interval'][1]:.4g} at any threshold"])
    return rows


def _tar_at_far(section: dict) -> str:
    rows = []
    for far, e in section.items():
        tars = sorted(e["tar"])
        rows.append([far, f"{e['threshold']:.4f}", f"{e['pooled_tar']:.4f}", f"{tars[0]:.4f}",
                     f"{tars[len(tars) // 2]:.4f}", f"{max(e['far']):.4g}"])
    return "<h3>TAR at fixed pooled FARs</h3>" + _table(
        ["pooled FAR", "threshold", "pooled TAR", "lowest class TAR", "median class TAR", "highest class FAR"], rows)


def _margins(section: dict) -> str:
    rows = []
    for name in ("recommended", "given"):
        e = section.get(name)
        if e:
            rows.append([name, f"{e['margin_plus']:.4f}", f"{e['margin_minus']:.4f}", f"{e['hard_positive_share']:.2%}",
                         f"{e['hard_negative_share']:.2%}", f"{e['tcm_loss']:.4g}",
                         "; ".join(e.get("warnings", [])) or "-"])
    return "<h3>TCM margins</h3>" + _table(["", "m+", "m-", "hard positives", "hard negatives", "TCM loss",
                                            "warnings"], rows)


def _groups(section: dict) -> str:
    from opis_cli.analyses.groups import disparity_text

    eps = "-" if section.get("eps_opis") is None else f"{section['eps_opis']:.6g}"
    parts = [f"<h3>Groups ({_e(section['column'])}): OPIS {section['opis']:.6g}, eps-OPIS {eps}</h3>"]
    parts += [f"<p>at {d['at']} ({d['threshold']:.4g}): {_e(disparity_text(d))}</p>"
              for d in section.get("disparity", [])]
    rows = [[str(g["group"]), f"{g['positive_pairs']:,}", f"{g['negative_pairs']:,}", f"{g['mean_utility']:.4f}",
             f"{g['opis_contribution']:.3g}"] for g in sorted(section["rows"], key=lambda g: g["mean_utility"])]
    return "\n".join(parts) + _table(["group", "positive pairs", "negative pairs", "mean utility",
                                      "OPIS contribution"], rows)


# (key in classes[], header, format for the script)
CLASS_COLUMNS = (("label", "label", "str"), ("size", "size", "int"), ("positive_pairs", "positive pairs", "int"),
                 ("mean_utility", "mean utility", "f4"), ("opis_contribution", "OPIS contribution", "g3"),
                 ("share", "share of OPIS", "pct"), ("in_worst_eps", "eps-worst", "bool"),
                 ("recall_at_1", "Recall@1", "f4"), ("eer", "EER", "g3"), ("map_at_r", "MAP@R", "f4"))


def _class_table(r: dict, index: int) -> str:
    classes, opis = r["classes"], r["metrics"]["opis"]

    def value(c: dict, key: str):
        if key == "share":
            return _round(c["opis_contribution"] / opis) if opis > 0 else 0.0
        if key == "recall_at_1":
            hits = c.get("recall_hits", {}).get("1")
            return _round(hits / c["queries"]) if hits is not None and c.get("queries") else None
        v = c.get(key)
        return _round(v) if isinstance(v, float) else v

    present = [col for col in CLASS_COLUMNS if any(value(c, col[0]) is not None for c in classes[:1])]
    data = {"columns": [{"key": k, "name": n, "fmt": f} for k, n, f in present],
            "rows": [[value(c, k) for k, _, _ in present] for c in classes]}
    # "</" inside a script element would end it: JSON escapes "<" instead.
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    head = "".join(f"<th data-col=\"{i}\" data-key=\"{_e(k)}\" tabindex=\"0\">{_e(n)}</th>"
                   for i, (k, n, _) in enumerate(present))
    return (f"<h3>Classes</h3><div class=\"classes\" id=\"classes-{index}\">"
            f"<p><input type=\"search\" placeholder=\"filter by label\" aria-label=\"filter by label\"> "
            f"<span class=\"count\"></span></p>"
            f"<table class=\"sortable\"><thead><tr>{head}</tr></thead><tbody></tbody></table>"
            f"<script type=\"application/json\">{blob}</script></div>")


# ----------------------------------------------------------------------------------- helpers
def _figure(runs: list[SavedRun], kind: str, caption: str) -> str:
    from opis_cli.report.plot import figure_bytes

    classes = max(len(r.report.get("classes", [])) for r in runs)
    fmt = "svg" if classes <= SVG_MAX_CLASSES else "png"
    data = base64.b64encode(figure_bytes(runs, kind, fmt)).decode("ascii")
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return (f"<figure><img alt=\"{_e(caption)}\" src=\"data:{mime};base64,{data}\">"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _round(v: float) -> float:
    """Four significant digits: what the table shows, and a page that stays small."""
    return float(f"{v:.4g}")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;
padding:0 16px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#666;margin:0 0 16px}.warning{color:#9a3412}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}th:first-child,td:first-child{text-align:left}
table.summary td:first-child{color:#444}th{background:#f6f6f6;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}tr.worst td{color:#b91c1c}
figure{margin:10px 0}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:13px}
input[type=search]{padding:4px 8px;width:260px}.count{color:#666}
"""

SCRIPT = r"""
(function(){
const LIMIT = ROWS;
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function fmt(v,f){
  if(v===null||v===undefined)return '-';
  if(f==='int')return Number(v).toLocaleString('en-US');
  if(f==='f4')return Number(v).toFixed(4);
  if(f==='g3')return Number(v).toPrecision(3);
  if(f==='pct')return (100*v).toFixed(1)+'%';
  if(f==='bool')return v?'yes':'';
  return esc(v);
}
function cmp(a,b){
  if(a===b)return 0; if(a===null)return 1; if(b===null)return -1;
  if(typeof a==='number'&&typeof b==='number')return a-b;
  if(typeof a==='boolean')return (a?1:0)-(b?1:0);
  return String(a)<String(b)?-1:1;
}
function init(box){
  const data=JSON.parse(box.querySelector('script[type="application/json"]').textContent);
  const cols=data.columns, all=data.rows, tbody=box.querySelector('tbody');
  const count=box.querySelector('.count'), input=box.querySelector('input');
  const heads=Array.from(box.querySelectorAll('th'));
  const worst=cols.findIndex(c=>c.key==='in_worst_eps');
  let rows=all.slice(), col=null, asc=true, filter='';
  function render(){
    const shown=filter?rows.filter(r=>String(r[0]).toLowerCase().includes(filter)):rows;
    tbody.innerHTML=shown.slice(0,LIMIT).map(r=>'<tr'+(worst>=0&&r[worst]?' class="worst"':'')+'>'+
      r.map((v,i)=>'<td>'+fmt(v,cols[i].fmt)+'</td>').join('')+'</tr>').join('');
    count.textContent=(shown.length>LIMIT?'first '+LIMIT+' of ':'')+shown.length+' of '+all.length+' classes';
  }
  function sortBy(i){
    if(col===i){asc=!asc;}else{col=i;asc=true;}
    const k=asc?1:-1;
    rows=all.slice().sort((a,b)=>cmp(a[i],b[i])*k||cmp(a[0],b[0]));
    heads.forEach((h,j)=>{if(j===i)h.setAttribute('aria-sort',asc?'ascending':'descending');else h.removeAttribute('aria-sort');});
    render();
  }
  heads.forEach((h,i)=>{h.addEventListener('click',()=>sortBy(i));
    h.addEventListener('keydown',e=>{if(e.key==='Enter')sortBy(i);});});
  input.addEventListener('input',()=>{filter=input.value.toLowerCase();render();});
  render();
  return {heads:heads,input:input};
}
const tables=Array.from(document.querySelectorAll('div.classes')).map(init);
// A link can carry a view of a run's table: #table=1&click=mean_utility,mean_utility&filter=sp-0
// (table: which run's, from 0; each name clicks that column's header once, as a reader would).
const params=new URLSearchParams(location.hash.slice(1));
const t=tables[Number(params.get('table')||0)];
if(t){
  (params.get('click')||'').split(',').filter(Boolean).forEach(key=>{
    const h=t.heads.find(h=>h.dataset.key===key); if(h)h.click();});
  if(params.get('filter')){t.input.value=params.get('filter');t.input.dispatchEvent(new Event('input'));}
}
document.body.dataset.ready='1';
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="opis-cli"><title>{title}</title><style>{css}</style></head>
<body>
{body}
<script>{script}</script>
</body></html>
"""
