"""The node's disclosure policy: thresholds and permissions that only the node sets.

It lives beside the store (`<store stem>.policy.yaml`), never in a request; when the file is absent
the defaults below apply. `ccdp node policy show|set --store S` reads and edits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ccdp.errors import SpecError

TimeUnit = Literal["day", "week", "month"]
TIME_UNIT_DAYS: dict[str, int] = {"day": 1, "week": 7, "month": 30}


class PolicyError(SpecError):
    """A node policy file or setting is invalid."""


class NodePolicy(BaseModel):
    """What this node releases; every analysis's output is judged against it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str | None = Field(None, description="Node name (default: the store file's stem).")
    min_cell: int = Field(5, ge=1, description="Counts below this (and above 0) are suppressed.")
    zero_cells: Literal["release", "suppress"] = Field(
        "release",
        description="Zeros reveal no individual, so by default they are released (and may be "
        "suppressed as complements); `suppress` hides every zero as well.",
    )
    min_cohort: int = Field(10, ge=1, description="Fewest rows a model (aggregate) may use.")
    max_params_ratio: float = Field(
        1 / 3, gt=0, le=1, description="A model may estimate at most this fraction of n params."
    )
    min_group: int = Field(5, ge=1, description="Fewest patients per event-time table group.")
    event_times: Literal["day", "week", "month", "forbid"] = Field(
        "day", description="Finest time grid for event-time tables, or `forbid`."
    )
    differencing_threshold: int | None = Field(
        None,
        ge=0,
        description="Refuse a released count whose set of records differs from an earlier "
        "released set by 1 to this many minus one records (None: min_cell; 0 disables).",
    )
    counts: Literal["exact", "perturbed"] = Field(
        "perturbed",
        description="perturbed (the feasibility tier): every count, margin and total of a "
        "count or crosstab that is not a registered study gets cell-key noise of at most "
        "`max_noise` (the same set of records always the same value, none between 1 and "
        "min_cell - 1), its filters and `by` only declared levels, bands and groupings, and "
        "nothing is suppressed or refused because of the data; exact: counts are released as "
        "they are, small cells suppressed and differences with earlier releases refused "
        "(docs/disclosure.md). A registered study's counts are exact under either.",
    )
    max_noise: int | None = Field(
        None,
        ge=0,
        description="Under `counts: perturbed`, the largest change to a count (D); at least "
        "min_cell - 1, so that a count of 1 can go to 0 or to min_cell with zero mean noise "
        "(None: min_cell - 1).",
    )
    feasibility_budget: int | None = Field(
        None,
        ge=0,
        description="Under counts: perturbed, how many feasibility tables (count and crosstab "
        "answers) a project gets from this node automatically; further ones wait for the "
        "custodian (`ccdp node pending`). Decided from the number of earlier answers alone, "
        "never from the data. None: unlimited.",
    )
    allowed_analyses: list[str] | None = Field(
        None, description="Analyses this node answers (None: every registered analysis)."
    )
    require_project: bool = Field(
        True,
        description="A hub's task must name a project this node's custodian accepted (`ccdp node "
        "projects accept`); one naming none is refused, so no hub can run a study here outside a "
        "project. false (or `ccdp node run --open`) also answers tasks without a project; "
        "`ccdp run` on the node's own machine is not affected.",
    )
    release: Literal["automatic", "manual"] = Field(
        "automatic", description="manual: answers wait for the operator (networked node)."
    )
    exact_release: Literal["registered", "reviewed", "any"] = Field(
        "registered",
        description="Which hub tasks are answered exactly without the custodian: registered: "
        "only a registered study of a project accepted here (its spec's canonical hash is one "
        "the custodian accepted) and the feasibility tier's perturbed counts; any other waits "
        "for the custodian (`ccdp node pending`); reviewed: every exact answer waits for the "
        "custodian; any: every task within an accepted project (published or public data, "
        "such as a trial's published dataset).",
    )
    consent: Literal["required", "statutory"] = Field(
        "required",
        description="required: a patient without DUO consent codes is in no project with a data "
        "use; statutory (a registry under a legal basis): absence does not exclude, codes "
        "present still restrict.",
    )

    trials: list[str] = Field(
        default_factory=list,
        description="Trials this node's custodian accepted for randomising its patients (`ccdp "
        "node randomise`): a patient's trial pseudonym and strata leave the node only for these "
        "(empty: none).",
    )

    @model_validator(mode="after")
    def _noise_fits(self) -> NodePolicy:
        """A bound below min_cell - 1 could not keep 1 to min_cell - 1 unpublished."""
        if self.max_noise is not None and self.max_noise < self.min_cell - 1:
            raise ValueError(
                f"max_noise {self.max_noise} must be at least min_cell - 1 = {self.min_cell - 1} "
                "(a count of 1 must be able to go to 0 or to min_cell under counts: perturbed)"
            )
        return self

    @property
    def noise(self) -> int:
        """The largest change perturbation makes to a count (D): `max_noise`, or min_cell - 1."""
        return self.max_noise if self.max_noise is not None else max(self.min_cell - 1, 0)

    @field_validator("allowed_analyses")
    @classmethod
    def _registered(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """A typo here would silently refuse every study: where the caller knows the registered
        analyses (the node does: ccdp.federation.node.policy), only those names are allowed."""
        known = (info.context or {}).get("analyses")
        if v is None or known is None:
            return v
        unknown = [a for a in v if a not in known]
        if unknown:
            raise ValueError(f"unknown analyses {unknown}; registered: {', '.join(known)}")
        return v


def policy_path(store: Path | str) -> Path:
    """`<store stem>.policy.yaml` beside the store."""
    store = Path(store)
    return store.with_name(f"{store.stem}.policy.yaml")


def load_policy(store: Path | str, analyses: Sequence[str] | None = None) -> NodePolicy:
    """The node's policy, or the defaults when the file does not exist; `analyses`, when
    given, are the names `allowed_analyses` may list."""
    path = policy_path(store)
    if not path.exists():
        return NodePolicy()
    return parse_policy(path.read_text(encoding="utf-8"), path, analyses)


def parse_policy(text: str, path: Path, analyses: Sequence[str] | None = None) -> NodePolicy:
    """The policy file `path` holding `text` (errors name `path` and the key)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML ({exc})") from None
    try:
        return NodePolicy.model_validate(raw, context={"analyses": analyses})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(map(str, err["loc"]))
        raise PolicyError(f"{path}: {key}: {err['msg']}") from None


def save_policy(store: Path | str, policy: NodePolicy) -> Path:
    """Write the policy beside the store (atomically: a reader never sees half a file)."""
    path = policy_path(store)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(policy.model_dump(), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


def set_policy_value(
    store: Path | str, key: str, value: str, analyses: Sequence[str] | None = None
) -> NodePolicy:
    """Set one key from its text form (YAML scalar or list), validated before it is written."""
    if key not in NodePolicy.model_fields:
        raise PolicyError(f"unknown policy key {key!r}; keys: {', '.join(NodePolicy.model_fields)}")
    parsed: Any = yaml.safe_load(value) if value.strip() else None
    data = load_policy(store, analyses).model_dump()
    data[key] = parsed
    try:
        policy = NodePolicy.model_validate(data, context={"analyses": analyses})
    except ValidationError as exc:
        raise PolicyError(f"policy {key}: {exc.errors()[0]['msg']} (got {value!r})") from None
    save_policy(store, policy)
    return policy
