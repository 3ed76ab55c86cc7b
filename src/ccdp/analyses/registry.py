"""Where analyses are found by name (study specs, the CLI, the node agent).

Entries are import paths so that looking up one analysis does not import the others.
"""

from __future__ import annotations

from importlib import import_module

from ccdp.analyses.base import Analysis
from ccdp.wire.errors import AnalysisError

_ENTRIES: dict[str, str] = {
    "count": "ccdp.analyses.count:Count",
    "crosstab": "ccdp.analyses.count:Crosstab",
    "incidence": "ccdp.analyses.incidence:Incidence",
    "km": "ccdp.analyses.km:KaplanMeier",
    "logrank": "ccdp.analyses.logrank:Logrank",
    "cox": "ccdp.analyses.cox:Cox",
    "logistic": "ccdp.analyses.glm:Logistic",
    "poisson": "ccdp.analyses.glm:Poisson",
    "vrt_report": "ccdp.analyses.vrt:VrtReport",
}


def names() -> list[str]:
    """Every registered analysis name, sorted."""
    return sorted(_ENTRIES)


def get(name: str) -> Analysis:
    """A fresh instance of the analysis called `name`."""
    try:
        module, cls = _ENTRIES[name].split(":")
    except KeyError:
        raise AnalysisError(f"unknown analysis {name!r}; known: {', '.join(names())}") from None
    return getattr(import_module(module), cls)()
