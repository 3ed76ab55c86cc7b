"""Exception classes shared by every stage; each stage subclasses CcdpError for its own failures."""


class CcdpError(Exception):
    """Base of every error ccdp raises on purpose; the CLI prints these without a traceback."""


class SpecError(CcdpError):
    """A declarative spec (mapping, cohort, study, analysis, policy) is invalid."""
