"""Errors raised by analyses: a node declining a request, and requests its data cannot answer.

The node runner reports `InsufficientData` as a refusal with its message as the stated reason (the
node is healthy; its data cannot honestly support the request). `AnalysisError` covers requests
that are wrong whatever the data (an unknown column, a non-binary logistic outcome, a singular
model) and is reported as a failure.
"""

from __future__ import annotations

from ccdp.errors import CcdpError


class AnalysisError(CcdpError):
    """An analysis cannot be computed as asked (bad column, singular design, no answers)."""


class InsufficientData(AnalysisError):
    """A node declines: its cohort cannot support the request (no rows, no usable outcome...)."""


class MalformedSummary(AnalysisError):
    """A summary does not have the form of its parts (unknown kind, missing fields, ragged or
    mismatched columns, values that are not finite numbers): refused wherever one is received."""
