"""ICD-O-3 code normalisation, to the contract of `ccdp.terminology.icdo3` (private bridge).

Uses the terminology stage's functions when present; until they are merged, a minimal
equivalent with the same signatures so the mapping can normalise `C421` and `9836/3`.
"""

from __future__ import annotations

import pandas as pd

try:
    from ccdp.terminology.icdo3 import normalise_morphology, normalise_topography
except ImportError:

    def normalise_topography(series: pd.Series) -> pd.Series:
        """`C421`, `c42.1`, `C 42 1` -> `C42.1`; None where unreadable."""
        compact = series.astype("string").str.upper().str.replace(r"[\s.\-]", "", regex=True)
        parts = compact.str.extract(r"^C(\d{2})(\d)$")
        out = "C" + parts[0] + "." + parts[1]
        return out.astype(object).where(out.notna(), None)

    def normalise_morphology(series: pd.Series) -> pd.DataFrame:
        """`9836/3`, `98363`, `M-9836/3`, `9836` -> morphology `9836`, behaviour `3` (or None)."""
        compact = series.astype("string").str.upper().str.replace(r"^M", "", regex=True)
        compact = compact.str.replace(r"[\s/\-.]", "", regex=True)
        parts = compact.str.extract(r"^(\d{4})(\d)?$")
        return pd.DataFrame(
            {
                "morphology": parts[0].astype(object).where(parts[0].notna(), None),
                "behaviour": parts[1].astype(object).where(parts[1].notna(), None),
            },
            index=series.index,
        )


__all__ = ["normalise_morphology", "normalise_topography"]
