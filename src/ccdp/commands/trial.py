"""`ccdp trial create|list|allocations` (the hub's admin and a trial's statistician) and
`ccdp node randomise` (a treating centre's node; added to the node group in commands/node.py):
docs/randomisation.md."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ccdp.commands.options import AS_JSON, CACERT, HUB, hub_client

trial_app = typer.Typer(
    help="Randomised trials at the hub: create one (admin), read its allocations (statistician).",
    no_args_is_help=True,
)


@trial_app.command("create")
def create(
    file: Path = typer.Argument(
        ..., help="Trial file (YAML/JSON): name, arms, ratio, strata, method, block_sizes, p."
    ),
    hub: str = HUB,
    token: str = typer.Option(..., "--token", envvar="CCDP_TOKEN", help="An admin's token."),
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Create a trial (checked here first: errors name the file and key); the hub draws its
    secret seed, which only the trial's statistician sees."""
    from ccdp.clinical.randomisation import load_trial

    spec = load_trial(file)
    made = hub_client(hub, token, cacert).create_trial(spec.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(made))
        return
    arms = ":".join(str(r) for r in made["ratio"])
    typer.echo(
        f"trial {made['name']} created: {', '.join(made['arms'])} ({arms}), {made['method']}, "
        f"strata {', '.join(made['strata']) or 'none'}"
    )


@trial_app.command("list")
def list_trials(
    hub: str = HUB,
    token: str = typer.Option(..., "--token", envvar="CCDP_TOKEN", help="A user's token."),
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Trials at the hub and how many patients each randomised (never the arms' counts)."""
    rows = hub_client(hub, token, cacert)._call("GET", "/api/trials")
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for t in rows:
        typer.echo(
            f"{t['name']}  {t['method']}  arms {', '.join(t['arms'])}  "
            f"strata {', '.join(t['strata']) or '-'}  randomised {t['randomised']}"
        )


@trial_app.command("allocations")
def allocations(
    trial: str = typer.Argument(..., help="The trial's name."),
    hub: str = HUB,
    token: str = typer.Option(
        ..., "--token", envvar="CCDP_TOKEN", help="A statistician of the trial's token."
    ),
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
    verify: bool = typer.Option(
        False, "--verify", help="Re-derive every allocation from the seed and compare."
    ),
) -> None:
    """The trial's allocation list, counts per arm and seed (a statistician of the trial)."""
    body = hub_client(hub, token, cacert).trial_allocations(trial)
    checked = None
    if verify:
        from ccdp.clinical.randomisation import TrialSpec, replay

        spec = TrialSpec.model_validate(body["spec"])
        again = replay(spec, body["seed"], [a["strata"] for a in body["allocations"]])
        checked = again == [a["arm"] for a in body["allocations"]]
        body["verified"] = checked
    if as_json:
        typer.echo(json.dumps(body))
    else:
        counts = ", ".join(f"{a} {n}" for a, n in body["counts"].items())
        typer.echo(f"trial {body['name']}: {len(body['allocations'])} allocated ({counts})")
        for a in body["allocations"]:
            strata = ", ".join(f"{k}={v}" for k, v in a["strata"].items())
            typer.echo(f"{a['seq']:>5}  {a['node']}  {a['patient']}  {a['arm']}  [{strata}]")
        if checked is not None:
            typer.echo("re-derived from the seed: " + ("all match" if checked else "MISMATCH"))
    if checked is False:
        raise typer.Exit(1)


def randomise(
    trial: str = typer.Argument(..., help="The trial's name at the hub."),
    patient: str = typer.Option(..., "--patient", help="The patient's key in the store."),
    store: Path = typer.Option(..., "--store", "-s", help="The node store (DuckDB file)."),
    hub: str = HUB,
    token: str = typer.Option(..., "--token", envvar="CCDP_NODE_TOKEN", help="Node token."),
    cacert: Path | None = CACERT,
    as_json: bool = AS_JSON,
) -> None:
    """Randomise one of this node's patients: the strata from the store, only a pseudonym and
    the strata to the hub; the arm goes into trial_enrolment and the audit log. Asking again
    returns the same arm."""
    from ccdp.federation.node.enrol import randomise as enrol

    client = hub_client(hub, token, cacert)
    try:
        got = enrol(store, trial, patient, client)
    finally:
        client.close()
    out = got.to_json()
    if as_json:
        typer.echo(json.dumps({k: out[k] for k in ("trial", "patient", "arm", "strata")}))
        return
    strata = ", ".join(f"{k}={v}" for k, v in got.strata.items()) or "none"
    again = " (already randomised: the same arm)" if got.repeated else ""
    typer.echo(f"patient {patient} randomised in {trial}: arm {got.arm}{again}; strata {strata}")
