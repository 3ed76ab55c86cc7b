"""`ccdp node refer`, `ccdp node referrals` (a treating centre's node and its custodian) and
`ccdp referral list|show|comment|recommend` (the expert board): docs/referrals.md. The node's
two commands join the node group in commands/node.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ccdp.commands.options import AS_JSON, CACERT, HUB, NODE_TOKEN, STORE, hub_client

EXPERT_TOKEN = typer.Option(
    ..., "--token", envvar="CCDP_TOKEN", help="A token of a member of the board (role expert)."
)

referral_app = typer.Typer(
    help="The expert board's referrals at the hub: list, read, discuss, recommend (role expert).",
    no_args_is_help=True,
)


def render_case(summary: dict[str, Any]) -> list[str]:
    """The case as a board member or custodian reads it: one line per fact, days from
    diagnosis."""
    years, months = divmod(summary["age_months"], 12)
    lines = [
        f"{summary['sex']}, {years} y {months} m at diagnosis; {summary['vital_status']}, last "
        f"contact day {summary.get('last_contact_day')}"
    ]
    for i, t in enumerate(summary["tumours"], start=1):
        d = t["diagnosis"]
        lines.append(
            f"tumour {i}: {d.get('label') or d['morphology']} ({d['morphology']}/"
            f"{d['behaviour']}, {d['topography']}; ICCC {d.get('iccc_subgroup') or '-'}); "
            f"immunophenotype {t.get('immunophenotype') or '-'}, CNS {t.get('cns_status') or '-'}, "
            f"WBC {t.get('wbc_at_diagnosis') or '-'}, risk group {t.get('risk_group') or '-'}"
        )
        if t.get("frontline_end_day") is not None:
            lines.append(f"  front-line therapy ended day {t['frontline_end_day']}")
        r = t.get("relapse")
        if r:
            lines.append(
                f"  first relapse day {r.get('day')}: {r.get('time_band')}, "
                f"{r.get('site_group')}, strategic group {r.get('strategic_group')}, "
                f"risk {r.get('risk')}"
            )
        for e in t.get("events", []):
            extra = f" {e['relapse_site']}" if e.get("relapse_site") else ""
            blasts = f", {e['bm_blasts_pct']}% marrow blasts" if e.get("bm_blasts_pct") else ""
            lines.append(f"  day {e['day']}: {e['type']}{extra}{blasts}")
        for tr in t.get("treatments", []):
            what = " ".join(x for x in (tr.get("agent"), tr.get("protocol")) if x)
            lines.append(
                f"  treatment {tr['type']} {what} (days {tr.get('start_day')}-{tr.get('end_day')})"
            )
        for m in t.get("biomarkers", []):
            lines.append(
                f"  marker {m['marker']}: {m.get('value') or '-'} {m.get('unit') or ''} "
                f"(day {m.get('day')})".replace("  (", " (")
            )
    for e in summary.get("trials", []):
        lines.append(f"trial {e['trial']}, arm {e.get('arm') or '-'}")
    if summary.get("withheld"):
        lines.append(f"{summary['withheld']} free-text value(s) withheld by the node's gate")
    return lines


def _print_recommendation(rec: dict[str, Any], by: str | None, at: str | None) -> None:
    typer.echo(f"recommendation ({by}, {at}): {', '.join(rec['options'])}")
    if rec.get("trial"):
        typer.echo(f"  trial: {rec['trial']}")
    if rec.get("text"):
        typer.echo(f"  {rec['text']}")


# -- the node -------------------------------------------------------------------------------
def refer(
    patient_id: str = typer.Argument(..., help="The patient's key in the store."),
    store: Path = STORE,
    hub: str = HUB,
    token: str = NODE_TOKEN,
    question: str = typer.Option(
        "Very-high-risk relapse: recommendation requested.",
        "--question",
        "-q",
        help="What the treating team asks the board.",
    ),
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Refer a child to the expert board: consent checked (DUO:0000043 or a statutory basis),
    the case summary built from the store and passed through the disclosure gate, then HELD
    until the custodian releases it (`ccdp node referrals --release ID`)."""
    from ccdp.federation.node.referral import refer as make

    client = hub_client(hub, token, cacert)
    try:
        item = make(store, patient_id, question, client)
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps({"id": item.id, "state": item.state, "summary": item.summary}))
        return
    typer.echo(f"referral {item.id} held for release (patient {patient_id}):")
    for line in render_case(item.summary):
        typer.echo("  " + line)
    for w in item.withheld:
        typer.echo(f"  withheld {w}")
    typer.echo(
        f"read it, then release: ccdp node referrals --store {store} --release {item.id} "
        "--hub URL --token NODE_TOKEN"
    )


def referrals(
    store: Path = STORE,
    hub: str | None = typer.Option(None, "--hub", help="Hub URL (to send and fetch)."),
    token: str | None = typer.Option(None, "--token", envvar="CCDP_NODE_TOKEN", help="Node token."),
    release: str | None = typer.Option(
        None, "--release", help="Release this held referral (id or prefix): it goes to the hub."
    ),
    withdraw: str | None = typer.Option(
        None, "--withdraw", help="Withdraw this held referral: it never leaves."
    ),
    reason: str = typer.Option(
        "withdrawn by the custodian", "--reason", help="Why (kept in the node's record)."
    ),
    show: str | None = typer.Option(None, "--show", help="Print one referral in full."),
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """This node's referrals and the board's recommendations. With --hub and --token the node
    also fetches new recommendations; --release sends a held referral, --withdraw drops it."""
    from ccdp.federation.node import referral as rf

    if withdraw is not None:
        item = rf.withdraw(store, withdraw, reason)
        typer.echo(f"referral {item.id} withdrawn; nothing of it was sent")
        return
    if show is not None:
        _show_local(rf.ReferralStore(store).find(show), as_json)
        return
    if release is not None or hub is not None:
        if hub is None or token is None:
            raise rf.ReferralError("releasing or fetching needs --hub and --token")
        client = hub_client(hub, token, cacert)
        try:
            if release is not None:
                item = rf.release(store, release, client)
                typer.echo(f"referral {item.id} released: at the hub as {item.hub_id}")
            for got in rf.fetch(store, client):
                typer.echo(f"referral {got.id}: the board's recommendation has arrived")
        finally:
            client.close()
    items = rf.ReferralStore(store).all()
    if as_json:
        typer.echo(json.dumps([_local_json(i) for i in items], indent=2))
        return
    if not items:
        typer.echo(f"no referrals at {store}")
    for i in items:
        rec = ", ".join(i.recommendation["options"]) if i.recommendation else "-"
        typer.echo(
            f"{i.id}  {i.state:<9}  patient {i.patient_id}  hub {i.hub_id or '-'}  "
            f"recommendation {rec}"
        )


def _local_json(item: Any) -> dict[str, Any]:
    keep = ("id", "patient_id", "state", "hub_id", "question", "recommendation")
    return {k: getattr(item, k) for k in keep} | {
        "recommended_by": item.recommended_by,
        "created_at": item.created_at.isoformat(),
    }


def _show_local(item: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(item.model_dump_json(indent=2))
        return
    typer.echo(f"referral {item.id} ({item.state}), patient {item.patient_id}: {item.question}")
    for line in render_case(item.summary):
        typer.echo("  " + line)
    if item.recommendation:
        _print_recommendation(item.recommendation, item.recommended_by, item.recommended_at)


# -- the board ------------------------------------------------------------------------------
@referral_app.command("list")
def list_referrals(
    hub: str = HUB, token: str = EXPERT_TOKEN, cacert: Path | None = CACERT, as_json: bool = AS_JSON
) -> None:
    """Referrals to the board, one line each."""
    rows = hub_client(hub, token, cacert).referrals()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no referrals")
    for r in rows:
        typer.echo(
            f"{r['id']}  {r['state']:<11}  {r['node']}  {r['age_months']} months  "
            f"{r['diagnosis']}  {r.get('strategic_group') or '-'}  {r['question'][:60]}"
        )


@referral_app.command("show")
def show_referral(
    ref: str = typer.Argument(..., help="The referral's id at the hub (R-…)."),
    hub: str = HUB,
    token: str = EXPERT_TOKEN,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """One case in full, the board's comments and any recommendation (reading is audited)."""
    body = hub_client(hub, token, cacert).referral(ref)
    if as_json:
        typer.echo(json.dumps(body))
        return
    typer.echo(f"{body['id']} from {body['node']} ({body['state']}): {body['question']}")
    for line in render_case(body["summary"]):
        typer.echo("  " + line)
    for c in body["comments"]:
        typer.echo(f"comment {c['author']} ({c['at']}): {c['text']}")
    if body.get("recommendation"):
        _print_recommendation(
            body["recommendation"], body.get("recommended_by"), body.get("recommended_at")
        )


@referral_app.command("comment")
def comment(
    ref: str = typer.Argument(..., help="The referral's id at the hub."),
    text: str = typer.Argument(..., help="The comment."),
    hub: str = HUB,
    token: str = EXPERT_TOKEN,
    cacert: Path | None = CACERT,
) -> None:
    """Add to the board's discussion of a case (never sent to the node)."""
    got = hub_client(hub, token, cacert).comment_referral(ref, text)
    typer.echo(f"comment {got['comment']} on {ref} by {got['author']}")


@referral_app.command("recommend")
def recommend(
    ref: str = typer.Argument(..., help="The referral's id at the hub."),
    file: Path = typer.Argument(
        ..., help="Recommendation (YAML/JSON): options (list), trial (if `trial`), text."
    ),
    hub: str = HUB,
    token: str = EXPERT_TOKEN,
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Record the board's recommendation (checked here first; once per referral): it returns
    to the referring node. Options: see clinical/data/board_options.csv."""
    from ccdp.specfile import load_spec
    from ccdp.wire.case_summary import CaseError, Recommendation

    rec = load_spec(file, Recommendation, "recommendation", "options, trial, text", CaseError)
    got = hub_client(hub, token, cacert).recommend(ref, rec.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(got))
        return
    typer.echo(f"recommendation recorded for {ref}: {', '.join(rec.options)}")
