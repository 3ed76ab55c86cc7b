"""An HTML report of finished studies: tables, and each result's own plot as inline SVG.

One self-contained file (no scripts, no external assets), so it can be mailed or archived.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ccdp.analyses.tables import NOT_REACHED, cell_3sig_grouped, pval, ratio_ci, term_order
from ccdp.cohort.labels import column_label, model_term_label, value_label
from ccdp.cohort.view import view_variables
from ccdp.disclosure.consent_note import CONSENT_NOTE

if TYPE_CHECKING:
    import pandas as pd

TEMPLATES = Path(__file__).with_name("templates")
RATE_EXTRAS = ["crude_ci_low", "crude_ci_high", "asr_se", "level", "standard", "suppressed"]


@dataclass
class StudyEntry:
    """One finished study for the report: its spec, the hub's record and how long it took."""

    key: str
    why: str
    spec: dict[str, Any]
    record: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def figure_svg(fig: Any) -> str:
    """A matplotlib Figure as an inline <svg> element (the XML prologue dropped)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def result_frame(result: Any) -> pd.DataFrame:
    """The table a reader wants first, in words: KM groups with medians and landmarks (95% CIs,
    in years) as the CLI formats them; a model's ratios with their CIs; incidence rates; else
    to_frame() with its grouping values in words."""
    import pandas as pd

    if hasattr(result, "summary_rows"):
        return pd.DataFrame(result.summary_rows())
    if hasattr(result, "coefficients"):
        return model_frame(result)
    frame = result.to_frame()
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
        frame.columns.name = None
    frame = worded(frame)
    if "asr" in frame.columns:
        return rate_frame(frame)
    return frame


def worded(frame: pd.DataFrame) -> pd.DataFrame:
    """The values of grouping columns (view variables) and a model's terms in words:
    'Leukaemias (I)', not 'I'; 'Arm: B', not 'arm[B]'."""
    out = frame.copy()
    for col in out.columns:
        if col == "term":
            out[col] = [model_term_label(str(t)) for t in out[col]]
        elif out[col].dtype == object and str(col) in view_variables():
            out[col] = [v if v is None else value_label(str(col), v) for v in out[col]]
    return out


def model_frame(result: Any) -> pd.DataFrame:
    """A regression's terms in words, in reading order, with the ratio and its 95% CI (2
    decimals, 'not estimable' for a degenerate interval) and p."""
    import pandas as pd

    terms = [c for c in result.coefficients if c.term != "(Intercept)"]
    key = "hr" if result.analysis == "cox" else "estimate"
    head = {"cox": "HR", "logistic": "OR", "poisson": "RR"}.get(result.analysis, "ratio")
    rows = [terms[i] for i in term_order([c.term for c in terms])]
    return pd.DataFrame(
        {
            "term": [model_term_label(c.term) for c in rows],
            f"{head} (95% CI)": [ratio_ci(getattr(c, key), c.ci_low, c.ci_high) for c in rows],
            "p": [pval(c.p) for c in rows],
        }
    )


def rate_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Incidence as an epidemiologist reads it: cases, person-years, crude rate, ASR (95% CI)."""
    import pandas as pd

    keep = ["cases", "person_years", "crude_rate", "asr", "asr_ci_low", "asr_ci_high"]
    out = frame[[c for c in frame.columns if c not in keep + RATE_EXTRAS]].copy()
    out["cases"] = frame["cases"]
    out["person-years"] = frame["person_years"]
    out["crude rate"] = frame["crude_rate"]
    cell = cell_3sig_grouped
    out["ASR (95% CI)"] = [
        f"{cell(a)} ({cell(lo)}–{cell(hi)})" if pd.notna(a) else cell(a)
        for a, lo, hi in zip(frame["asr"], frame["asr_ci_low"], frame["asr_ci_high"], strict=True)
    ]
    return out


def frame_html(frame: pd.DataFrame, max_rows: int = 40) -> str:
    """A table for the page, its column headings in words ('Rows read', not rows_read)."""
    shown = frame.head(max_rows).astype(object).map(cell_3sig_grouped)
    shown.columns = [column_label(c) for c in shown.columns]
    return shown.to_html(index=False, border=0)


def caption(result: Any) -> str:
    """What a table needs said beside it: a Cox model's n, events and reference levels; an
    incidence table's period and interval methods; a KM table's conventions; then the result's
    method note (times exact or grouped, nodes a group excludes, complete cases, perturbation)."""
    from ccdp.analyses.event_data import noted

    head = ""
    if getattr(result, "analysis", None) == "cox":
        ref = result.reference_text()
        head = f"n = {result.n}, events = {result.events}" + (f"; {ref}" if ref else "")
    elif hasattr(result, "summary_rows"):
        head = (
            f"Medians and their 95% CIs in years ({NOT_REACHED}: the curve stays above 50%); "
            "survival in % at each landmark. 95% CIs log-log."
        )
    return " ".join(x for x in (head, noted(result)) if x)


def node_label(status: str, reason: str | None) -> str:
    """A refusal for too small a cohort reads as what it means (see disclosure TOO_FEW)."""
    from ccdp.disclosure.refusals import TOO_FEW

    if status == "refused" and (reason or "").startswith(TOO_FEW):
        return TOO_FEW
    return status


def shown_reason(reason: str | None) -> str | None:
    """A node's note as a person reads it: the consent line only when consent excluded someone
    ('excluded by their consent (DUO): 0' on every node says nothing); None when nothing is left."""
    if not reason:
        return None
    parts = [p for p in reason.split("; ") if p != f"{CONSENT_NOTE}: 0"]
    return "; ".join(parts) or None


def shown_refusals(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The board's list (hub `refusals`) without what says nothing: a node that answered with only
    'excluded by their consent (DUO): 0' is no refusal, and a study left without one is gone."""
    out = []
    for study in studies:
        nodes = [{**n, "reason": shown_reason(n.get("reason"))} for n in study.get("nodes") or []]
        nodes = [n for n in nodes if n["reason"] or n.get("status") != "answered"]
        if nodes:
            out.append({**study, "nodes": nodes})
    return out


def dedup_line(result: Any) -> str | None:
    """What a study says of its linked duplicates (docs/dedup.md), or None when there is
    nothing to say (no node holds link groups, or a result from before `dedup`): with `dedup`
    on, how many each node set aside as its gate released the count; off, that a child
    registered at several nodes counts at each."""
    if result.dedup is False:
        return "dedup: off (a child registered at several nodes is counted at each)"
    counts = result.set_aside()
    if not result.dedup or not counts:
        return None
    per_node = "; ".join(f"{node}: {c.text()}" for node, c in counts.items())
    exact = [c.n for c in counts.values() if c.released == "exact"]
    total = f" (total {sum(exact)})" if len(exact) == len(counts) and len(counts) > 1 else ""
    return f"dedup: on; linked duplicates set aside, counted at another node: {per_node}{total}"


def dash_note(result: Any) -> str:
    """What a dash means in this table, so a suppressed count is never read as missing data."""
    if getattr(result, "groups", None):
        return "— : not estimable (beyond the group's follow-up)."
    return (
        "— : withheld by a node's disclosure control (a count below its threshold, or a cell "
        "that would let it be worked out from the margins); totals that need it are withheld too."
    )


def _entry_context(entry: StudyEntry) -> dict[str, Any]:
    from ccdp.federation.client import study_result

    rec = entry.record
    out = rec.get("result") or {}
    nodes = [
        {
            "name": n,
            "status": s["status"],
            "label": node_label(s["status"], s.get("reason")),
            "reason": shown_reason(s.get("reason")),
        }
        for n, s in (out.get("nodes") or {}).items()
    ]
    ctx: dict[str, Any] = {
        "key": entry.key,
        "title": entry.spec.get("title", entry.key),
        "why": entry.why,
        "nodes": nodes,
        # refusals and failures, and what an answering node withheld (e.g. a small KM group)
        "refusals": [n for n in nodes if n["reason"] and n["label"] == n["status"]],
        "spec": yaml.safe_dump(entry.spec, sort_keys=False).strip(),
        "rounds": out.get("rounds", 0),
        "seconds": f"{entry.seconds:.1f}",
        "table": "",
        "svg": "",
        "error": rec.get("error"),
        "note": "",
        "caption": "",
        "dedup": None,
    }
    if out.get("result") is None:
        ctx["error"] = ctx["error"] or "too few nodes answered"
        return ctx
    result = study_result(out)
    ctx["dedup"] = dedup_line(result)
    if result.result is None:
        return ctx
    ctx["table"] = frame_html(result_frame(result.result))
    ctx["caption"] = caption(result.result)
    ctx["note"] = dash_note(result.result) if "<td>—</td>" in ctx["table"] else ""
    if hasattr(result.result, "plot"):
        ctx["svg"] = figure_svg(result.result.plot())
    return ctx


@dataclass
class LinkageSection:
    """The demo's record linkage beside what it is for: the run's figures per node, its pairs
    against the synthesiser's truth, and one pooled incidence study three ways (dedup on, off,
    and over the truth's link groups)."""

    why: str
    quality: dict[str, Any]  # found, true, correct, precision, recall
    nodes: list[dict[str, Any]]  # node, records, linked, kept, set_aside (the run, node-side)
    pooled: list[tuple[str, Any]]  # (label, the study's StudyResult or None)
    seconds: float
    released_from: str = ""  # the study whose released set-aside counts are shown per node


POOLED_COLUMN = "pooled incidence, ages 0-14"
SET_ASIDE_COLUMN = "set aside in the pooled study (another node counts the child), as released"


def pooled_frame(pooled: list[tuple[str, Any]]) -> pd.DataFrame:
    """One row per way of counting, as the incidence table reads (cases, person-years, crude
    rate, ASR with its CI); a study without a result shows dashes."""
    import pandas as pd

    rows = []
    for label, study in pooled:
        result = None if study is None else study.result
        if result is None:
            rows.append(pd.DataFrame({POOLED_COLUMN: [label]}))
            continue
        frame = result.to_frame().reset_index(drop=True)
        rows.append(rate_frame(frame).assign(**{POOLED_COLUMN: label}))
    out = pd.concat(rows, ignore_index=True)
    return out[[POOLED_COLUMN, *[c for c in out.columns if c != POOLED_COLUMN]]]


def released_set_aside(study: Any) -> dict[str, str]:
    """Each node's set-aside count as its gate released it (docs/dedup.md), by node name."""
    if study is None:
        return {}
    return {str(n).upper(): c.text() for n, c in study.set_aside().items()}


def linkage_context(section: LinkageSection) -> dict[str, Any]:
    """The template's view of the section: figures in words, two tables, the text lines."""
    import pandas as pd

    q = section.quality
    facts = [
        ("pairs found by the linkage", f"{q['found']:,}"),
        ("true pairs (truth.json)", f"{q['true']:,}"),
        ("precision", f"{q['precision']:.3f}"),
        ("recall", f"{q['recall']:.3f}"),
        ("seconds to link", f"{section.seconds:.1f}"),
    ]
    released = released_set_aside(dict(section.pooled).get(section.released_from))
    nodes = pd.DataFrame(
        [
            {
                "node": n["node"],
                "records sent to the linkage service": n["records"],
                SET_ASIDE_COLUMN: released.get(str(n["node"]).upper(), "—"),
            }
            for n in section.nodes
        ]
    )
    pooled = pooled_frame(section.pooled)
    return {
        "why": section.why,
        "facts": facts,
        "nodes": nodes.to_html(index=False, border=0),
        "pooled": frame_html(pooled),
        "text": linkage_text(facts, pooled),
    }


def linkage_text(facts: list[tuple[str, str]], pooled: pd.DataFrame) -> str:
    """The section as plain text (the demo prints it on its console)."""
    head = "; ".join(f"{label}: {value}" for label, value in facts)
    return head + "\n" + pooled.astype(object).map(cell_3sig_grouped).to_string(index=False)


def render_report(
    entries: list[StudyEntry],
    path: Path,
    title: str,
    subtitle: str,
    facts: list[tuple[str, str]],
    footer: str = "",
    ingest: list[dict[str, Any]] | None = None,
    linkage: LinkageSection | None = None,
) -> Path:
    """Write the report to `path` (atomically) and return it."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2"]))
    html = env.get_template("demo.html.j2").render(
        title=title,
        subtitle=subtitle,
        facts=facts,
        studies=[_entry_context(e) for e in entries],
        ingest=frame_html(pd.DataFrame(ingest)) if ingest else "",
        linkage=linkage_context(linkage) if linkage else None,
        footer=footer,
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
