"""FHIR R4 (PanCareSurPass 1.0.0 and mCODE STU4 profiles): the model to Bundles and back.

Export: one mCODE patient Bundle (type collection) per patient, one NDJSON file per batch of
patients (a million patients are a few dozen files, not a million). Import: Bundles read back into
the model's tables as text and sent through the ingest pipeline, so every row is checked and kept
or quarantined like any other source. Field-by-field mapping: docs/exchange/fhir.md.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import pandas as pd

from ccdp.exchange import fhir_codes as c
from ccdp.exchange.fhir_build import dumps
from ccdp.exchange.fhir_read import TABLES, FhirImportError, Rows, bundle_files, read_file
from ccdp.exchange.fhir_write import bundles
from ccdp.exchange.output import ExportError, ExportSummary
from ccdp.exchange.source import BATCH, PatientBatch, patient_batches
from ccdp.ingest.pipeline import IngestReport, ingest_frames
from ccdp.model import load_model
from ccdp.store import NodeStore

STANDARD = "FHIR R4 (4.0.1)"

NOTES = [
    "One mCODE patient Bundle (type collection) per patient, one Bundle per line of "
    "bundles-NNNNN.ndjson (one file per batch of patients).",
    f"ICCC-3 codes use the provisional code system URI {c.ICCC3} (the PanCareSurPass IG marks "
    "it as not yet assigned by HL7).",
    "Displays of ICD-O-3 and ICCC-3 codes come from ccdp's terminology, not the IG's code-system "
    "fragments.",
    "The store is pseudonymised: Patient.name and Patient.contact.telecom (required by the PCSP "
    "Patient profile) carry the data-absent-reason extension 'masked'.",
    "What neither IG profiles (cause of death, risk group, immunophenotype, WBC, CNS status, "
    "bone-marrow blasts, consent, trial enrolment) is written to base FHIR R4 resources tagged "
    "with a urn:ccdp:fhir: profile name; ccdp codes and identifiers use that namespace too.",
]


def export_store(
    store: NodeStore,
    out: Path,
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
    jobs: int = 1,
) -> ExportSummary:
    """Write one Bundle per patient of `store` into the folder `out`, a file per batch of
    `batch_size` patients (`progress(done_patients)` after each).

    With `jobs` > 1, batches are read here and written by `jobs` worker processes (the writing
    is CPU bound Python); at most `jobs` batches wait or run at a time, so memory stays a few
    batches whatever the store's size, and each batch still has its own file: the same files
    as with one job."""
    if jobs < 1:
        raise ExportError(f"jobs must be 1 or more, not {jobs}")
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    done = 0

    def finished(batch_counts: Counter[str], patients: int) -> None:
        nonlocal done
        counts.update(batch_counts)
        done += patients
        if progress is not None:
            progress(done)

    batches = patient_batches(store, batch_size)
    if jobs == 1:
        for batch in batches:
            finished(write_batch(batch, _batch_path(out, batch)), len(batch.patient))
    else:
        _in_workers(batches, out, jobs, finished)
    return ExportSummary(
        format="fhir",
        standard=STANDARD,
        profiles=[*c.ALL_PROFILES, *c.EXTENSIONS],
        patients=done,
        records=dict(sorted(counts.items())),
        notes=list(NOTES),
    )


def _batch_path(out: Path, batch: PatientBatch) -> Path:
    return out / f"bundles-{batch.number:05d}.ndjson"


def write_batch(batch: PatientBatch, path: Path) -> Counter[str]:
    """Write the batch's Bundles, one per line, to `path`; the resources written, by type."""
    kinds: list[str] = []
    patients = 0
    with path.open("wb") as fh:
        for bundle in bundles(batch):
            kinds.extend([entry["resource"]["resourceType"] for entry in bundle["entry"]])
            fh.write(dumps(bundle))
            patients += 1
    counts = Counter(kinds)
    counts["Bundle"] = patients
    return counts


def _in_workers(
    batches: Iterator[PatientBatch],
    out: Path,
    jobs: int,
    finished: Callable[[Counter[str], int], None],
) -> None:
    """`write_batch` of every batch in `jobs` processes (spawned: the parent holds DuckDB's
    threads, which a fork would copy mid-flight), at most `jobs` batches in flight."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending: dict[Future[Counter[str]], int] = {}

        def settle(until: int) -> None:
            while len(pending) > until:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    finished(future.result(), pending.pop(future))

        try:
            for batch in batches:
                settle(jobs - 1)
                path = _batch_path(out, batch)
                pending[pool.submit(write_batch, batch, path)] = len(batch.patient)
            settle(0)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def import_bundles(
    source: Path, store: Path, *, progress: bool = True, batch_size: int = BATCH
) -> IngestReport:
    """Ingest Bundles from `source` (a .json Bundle, an .ndjson of Bundles, or a folder of
        them) into `store`, returning the ingest report.

        Keys are read from the resources' ccdp identifiers (else their first identifier, else
        their id). A Patient carrying a name, a telephone, a street address or an identifier of
    another system than ccdp's is identified data: then every key is
        pseudonymised with the store's key, as the ingest does for a source with direct
        identifiers; ccdp's own export (pseudonymised, names masked) keeps its keys as written.

        Every file is read once before anything is stored (a fault in any file stores nothing), then
        ingested `batch_size` Bundles at a time (whole files), one report for all."""
    files = bundle_files(source)
    identified, found = False, 0
    for rows in _chunks(files, batch_size):  # read all first: a faulty file stores nothing
        identified |= rows.identified
        found += rows.bundles
    if not found:
        raise FhirImportError(f"{source}: no Bundle in {len(files)} file(s)")
    reports = [
        ingest_frames(
            store, _frames(rows, identified), str(source), progress=progress, absent_columns={}
        )
        for rows in _chunks(files, batch_size)
    ]
    return _merge(reports)


def _chunks(files: list[Path], size: int = BATCH) -> Iterator[Rows]:
    """The rows of `files`, about `size` Bundles at a time (whole files), so that a large
    import never holds more than a batch of patients in memory."""
    rows = Rows()
    for path in files:
        read_file(path, rows)
        if rows.bundles >= size:
            yield rows
            rows = Rows()
    if rows.bundles:
        yield rows


def _frames(rows: Rows, identified: bool) -> dict[str, pd.DataFrame]:
    frames = {t: _frame(t, rows.tables[t]) for t in TABLES}
    if identified:
        frames["patient"]["_identifier_fhir"] = frames["patient"]["patient_id"]
    return frames


def _merge(reports: list[IngestReport]) -> IngestReport:
    """One report for an import ingested in several batches: counts summed."""
    first = reports[0]
    if len(reports) == 1:
        return first
    total = first.model_copy(deep=True)
    for other in reports[1:]:
        for name in (
            "rows_read",
            "accepted",
            "quarantined",
            "flagged",
            "rechecked",
            "requarantined",
        ):
            setattr(total, name, getattr(total, name) + getattr(other, name))
        for table, counts in other.tables.items():
            mine = total.tables.setdefault(table, type(counts)())
            for name, value in counts.model_dump().items():
                setattr(mine, name, getattr(mine, name) + value)
        for edit_id, n in other.edits.items():
            total.edits[edit_id] = total.edits.get(edit_id, 0) + n
        total.pseudonymised |= other.pseudonymised
    return total


def _frame(table: str, rows: list[dict[str, str | None]]) -> pd.DataFrame:
    """Rows as a text frame with every non-derived field of the table (in model order)."""
    fields = [f.name for f in load_model().table(table).fields if not f.derived]
    columns = [*fields, "_source_file", "_source_row"]
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    return frame.astype(object).where(frame.notna(), None)
