"""The exact linear audit of released record sets: which few records a combination of them isolates.

Every count a node releases is the size of a set of records (disclosure/ledger.py). Three sets
released by three innocent-looking studies, A, B and C with C = A ∪ B ∪ D, give |D| = |A| + |B| −
|C| − ... : any linear combination of released counts is the count of whatever records its
coefficients leave with weight one. The pairwise ledger sees none of this (every pair of sets is
far apart), so before a project's registered studies are accepted, and after each release, the
node audits the whole system at once.

The records are partitioned into *atoms* (records in exactly the same released sets). A released
set is a 0/1 row over atoms (the incidence matrix M, sets × atoms); its count is that row times
the atom sizes. A union U of atoms is determined by the released counts exactly when its
indicator lies in the row space of M (over the rationals: a half-integer combination pins a
count down as surely as an integer one, so that is the test, and the finding says whether
integer coefficients suffice). U isolates records when its size is 1 to `min_cell − 1`.

With K = I − P (P the orthogonal projection onto the row space, K positive semi-definite),
1_U is in the row space exactly when 1_Uᵀ K 1_U = 0. Only atoms smaller than `min_cell` can be
in such a U, so K is needed on those alone. A minimal determined union is connected in the graph
of non-zero entries of K (if U split into A and B with K_AB = 0, each would be determined by
itself: 1_Aᵀ K 1_A = −1_Bᵀ K 1_B ≤ 0), so the audit enumerates connected unions of small atoms
of total size below `min_cell`, smallest first, and every determined union is a disjoint union
of the minimal ones it reports. The projection comes from the eigen-decomposition of the smaller
Gram matrix, as secondary suppression's audit does (`suppress._null_space`): of the atoms when
they are few, of the sets otherwise.

A finding says which sources (studies, earlier releases) combine and how many records it
isolates as the range "1–(min_cell − 1)", never which records and never the exact number.
Pure: sets in, findings out; the node's drivers live in federation/node/acceptance.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import linalg, sparse
from threadpoolctl import threadpool_limits

from ccdp.disclosure.suppress import _null_space
from ccdp.errors import CcdpError

TOL = 1e-7  # K entries and residuals below this are zero (counts are integers, K is O(1))
MAX_UNIONS = 50_000  # unions of 3+ atoms examined before the audit stops and says so
SEARCH_SECONDS = 10.0  # and the time it may take
SEED = 0x5EC1_A0D1
MAX_SPARSE = 20  # findings whose combination is made sparse (and checked for integers)
# The audit is dense linear algebra: the sets' Gram matrix and K on the small atoms, each
# eigen-decomposed (O(n³) time, n² memory: 800 MB a matrix and minutes of one core at this
# bound). Far above it the audit would take hours and more memory than a node has (50
# registered studies with KM tables on 300,000 tumours: 59,433 sets and 241,339 small atoms, a
# 28 GB Gram matrix), so above it the audit stops first and says so (benchmarks/bench_audit.py).
MAX_DENSE = 10_000


class AuditError(CcdpError):
    """The audit was given sets it cannot read (one label per set is needed)."""


@dataclass(frozen=True)
class Finding:
    """A combination of released sets that isolates a few records: which sources, how many
    (as a range), never who."""

    sources: tuple[str, ...]
    records: str  # "1–4": the range the policy protects, never the exact number
    integer: bool  # integer coefficients suffice (otherwise a rational combination does)

    def text(self) -> str:
        way = "an integer" if self.integer else "a fractional"
        return f"{way} combination of {', '.join(self.sources)} isolates {self.records} records"


@dataclass
class AuditResult:
    """What the audit found, with what it examined (for the custodian and the node's log)."""

    findings: list[Finding] = field(default_factory=list)
    sets: int = 0  # distinct non-empty sets audited
    atoms: int = 0
    small_atoms: int = 0
    seconds: float = 0.0
    complete: bool = True  # False: the union search hit its bound (see `note`)
    note: str | None = None

    @property
    def clean(self) -> bool:
        return not self.findings

    def summary(self) -> dict[str, object]:
        """JSON for the audit log and `--json`: names sources and ranges only."""
        return {
            "findings": [
                {"sources": list(f.sources), "records": f.records, "integer": f.integer}
                for f in self.findings
            ],
            "sets": self.sets,
            "atoms": self.atoms,
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "note": self.note,
        }


def records_range(min_cell: int) -> str:
    """The range a finding states: the exact number is the very thing it protects."""
    return f"1–{max(1, min_cell - 1)}"


@dataclass
class _System:
    """Distinct sets as an incidence matrix over atoms."""

    labels: list[tuple[str, ...]]  # the sources of each distinct set
    incidence: sparse.csr_matrix  # sets × atoms, 0/1
    sizes: np.ndarray  # records per atom


def _system(sets: Sequence[np.ndarray], labels: Sequence[str]) -> _System:
    """Deduplicate the sets, then partition their records into atoms by membership: each
    record gets a 128-bit signature (two sums of random 64-bit weights of its sets)."""
    if len(sets) != len(labels):
        raise AuditError("audit: one label per set")
    distinct: dict[bytes, int] = {}
    uniq: list[np.ndarray] = []
    names: list[list[str]] = []
    for s, lab in zip(sets, labels, strict=True):
        members = np.unique(np.asarray(s, dtype=np.uint64))
        if members.size == 0:
            continue  # an empty set (a zero) says nothing about anyone
        key = members.tobytes()
        if key not in distinct:
            distinct[key] = len(uniq)
            uniq.append(members)
            names.append([])
        if lab not in names[distinct[key]]:
            names[distinct[key]].append(lab)
    n = len(uniq)
    if n == 0:
        return _System([], sparse.csr_matrix((0, 0)), np.zeros(0, dtype=np.int64))
    lens = np.array([u.size for u in uniq])
    set_of = np.repeat(np.arange(n), lens)
    keys = np.concatenate(uniq)
    records, rec = np.unique(keys, return_inverse=True)
    rng = np.random.default_rng(SEED)
    w = rng.integers(0, np.iinfo(np.int64).max, size=(2, n), dtype=np.int64).astype(np.uint64)
    sig = np.zeros((records.size, 2), dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(sig[:, 0], rec, w[0][set_of])
        np.add.at(sig[:, 1], rec, w[1][set_of])
    _, atom_of, sizes = np.unique(sig, axis=0, return_inverse=True, return_counts=True)
    atom_of = np.asarray(atom_of).reshape(-1)
    pairs = np.unique(set_of * np.int64(sizes.size) + atom_of[rec])
    rows, cols = np.divmod(pairs, np.int64(sizes.size))
    mat = sparse.csr_matrix(
        (np.ones(rows.size), (rows, cols)), shape=(n, sizes.size), dtype=np.float64
    )
    return _System([tuple(x) for x in names], mat, sizes.astype(np.int64))


@dataclass
class _Projection:
    """K = I − P on the small atoms, and what is needed to name a finding's sources."""

    k_small: np.ndarray
    eig_vecs: np.ndarray  # of the sets' Gram matrix, non-null part
    eig_vals: np.ndarray


def _projection(system: _System, small: np.ndarray) -> _Projection:
    mat = system.incidence
    n_sets, n_atoms = mat.shape
    gram = (mat @ mat.T).toarray()
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > 1e-9 * max(1.0, float(vals.max(initial=0.0)))
    vals, vecs = vals[keep], vecs[:, keep]
    if n_atoms <= n_sets:  # few atoms: the null space of M itself, as suppression computes it
        null = _null_space(mat.toarray())[small]
        k_small = null @ null.T
    else:  # few sets: an orthonormal basis of the row space from the sets' Gram matrix
        basis = (mat[:, small].T @ vecs) / np.sqrt(vals)[None, :]
        k_small = np.eye(int(small.size)) - basis @ basis.T
    return _Projection(np.asarray(k_small), vecs, vals)


def _unions(
    k: np.ndarray, sizes: np.ndarray, min_cell: int, budget: int
) -> tuple[list[tuple[int, ...]], bool]:
    """Minimal connected unions U of small atoms with 1_Uᵀ K 1_U = 0 and size < min_cell,
    smallest first; False when the search stopped at `budget` unions."""
    # a determined U has K 1_U = 0: only atoms in the support of K's kernel can be in one
    vals, vecs = np.linalg.eigh(k)
    kernel = vecs[:, vals < TOL]
    if kernel.shape[1] == 0:
        return [], True
    support = np.flatnonzero(np.linalg.norm(kernel, axis=1) > 1e-6)
    found, complete = _search(k[np.ix_(support, support)], sizes[support], min_cell, budget)
    return [tuple(int(support[i]) for i in u) for u in found], complete


def _search(
    k: np.ndarray, sizes: np.ndarray, min_cell: int, budget: int
) -> tuple[list[tuple[int, ...]], bool]:
    """The connected-union search of `_unions` on the kernel's support: single atoms and pairs
    exhaustively (vectorised), larger unions breadth-first within `budget` unions and
    SEARCH_SECONDS (a short-vector problem: exponential in the worst case)."""
    n = k.shape[0]
    diag = np.diag(k)
    single = diag < TOL
    pair = (diag[:, None] + diag[None, :] + 2 * k) < TOL
    pair &= np.triu(np.ones((n, n), dtype=bool), 1) & (sizes[:, None] + sizes[None, :] < min_cell)
    pair &= ~single[:, None] & ~single[None, :]
    found: list[frozenset[int]] = [frozenset([int(i)]) for i in np.flatnonzero(single)]
    found += [frozenset([int(i), int(j)]) for i, j in np.argwhere(pair)]
    nbrs = [np.flatnonzero((np.abs(k[i]) > TOL) & (np.arange(n) != i)) for i in range(n)]
    level: set[frozenset[int]] = {
        frozenset([int(i), int(j)])
        for i in range(n)
        if not single[i]
        for j in nbrs[i]
        if int(j) > i and not single[j] and sizes[i] + sizes[j] < min_cell and not pair[i, j]
    }
    deadline = time.perf_counter() + SEARCH_SECONDS
    seen = 0
    while level:
        nxt: set[frozenset[int]] = set()
        for u in level:
            seen += 1
            if seen > budget or (seen % 256 == 0 and time.perf_counter() > deadline):
                return [tuple(sorted(f)) for f in found], False
            idx = np.fromiter(u, dtype=np.int64)
            room = min_cell - 1 - int(sizes[idx].sum())
            for i in u:
                for j in nbrs[i]:
                    if int(j) in u or sizes[j] > room or single[j]:
                        continue
                    w = u | {int(j)}
                    if w in nxt or any(f <= w for f in found):
                        continue
                    widx = np.fromiter(w, dtype=np.int64)
                    if float(k[np.ix_(widx, widx)].sum()) < TOL:
                        found.append(w)
                    else:
                        nxt.add(w)
        level = nxt
    return [tuple(sorted(f)) for f in found], True


def _coefficients(system: _System, proj: _Projection, atoms: np.ndarray) -> np.ndarray:
    """The least-norm combination of the sets whose atom weights are 1 on `atoms`, 0 elsewhere."""
    rhs = np.asarray(system.incidence[:, atoms].sum(axis=1)).reshape(-1)
    return np.asarray(proj.eig_vecs @ ((proj.eig_vecs.T @ rhs) / proj.eig_vals))


def _basic(system: _System, coef: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """A basic solution on independent sets chosen by pivoted QR among those the least-norm
    one uses: fewer sets to name, and integral where a ±1 combination exists (as for windows
    A + B − C). Falls back to the least-norm solution if it does not reproduce the union."""
    scale = max(1.0, float(np.abs(coef).max(initial=0.0)))
    used = np.flatnonzero(np.abs(coef) > 1e-6 * scale)
    if used.size == 0:
        return coef
    a = system.incidence[used].toarray().T  # atoms × used sets
    _, r, piv = linalg.qr(a, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > 1e-9 * max(1.0, float(diag.max(initial=0.0)))).sum())
    cols = piv[:rank]
    target = np.zeros(a.shape[0])
    target[atoms] = 1.0
    sol = np.linalg.lstsq(a[:, cols], target, rcond=None)[0]
    if not np.allclose(a[:, cols] @ sol, target, atol=1e-8):
        return coef
    out = np.zeros_like(coef)
    out[used[cols]] = sol
    return out


def _integer(system: _System, coef: np.ndarray, atoms: np.ndarray) -> bool:
    """Do the rounded coefficients already give the union (a ±1/integer combination)?"""
    rounded = np.round(coef)
    if not np.allclose(coef, rounded, atol=1e-6):
        return False
    target = np.zeros(system.incidence.shape[1])
    target[atoms] = 1.0
    return bool(np.allclose(system.incidence.T @ rounded, target, atol=1e-9))


def audit(
    sets: Sequence[np.ndarray],
    labels: Sequence[str],
    min_cell: int,
    *,
    only_with: set[str] | None = None,
    budget: int = MAX_UNIONS,
) -> AuditResult:
    """Every minimal union of 1 to min_cell − 1 records that the released `sets` (sorted or not,
    record keys) determine, named by the `labels` of the sets that combine into it.

    `only_with`: report only findings whose combination needs a set carrying one of these
    labels (detection after a release: what the new sets add to what was known)."""
    start = time.perf_counter()
    with threadpool_limits(1):  # two cores shared: BLAS threads only add contention here
        result = _audit(sets, labels, min_cell, only_with, budget)
    result.seconds = time.perf_counter() - start
    return result


def _audit(
    sets: Sequence[np.ndarray],
    labels: Sequence[str],
    min_cell: int,
    only_with: set[str] | None,
    budget: int,
) -> AuditResult:
    system = _system(sets, labels)
    small = np.flatnonzero((system.sizes > 0) & (system.sizes < min_cell))
    result = AuditResult(
        sets=len(system.labels), atoms=int(system.sizes.size), small_atoms=int(small.size)
    )
    if small.size == 0 or min_cell <= 1:
        return result
    if max(len(system.labels), int(small.size)) > MAX_DENSE:
        result.complete = False
        result.note = (
            f"not examined: {len(system.labels)} sets and {small.size} small atoms exceed the "
            f"exact audit's bound of {MAX_DENSE} (dense linear algebra)"
        )
        return result
    proj = _projection(system, small)
    unions, result.complete = _unions(proj.k_small, system.sizes[small], min_cell, budget)
    if not result.complete:
        result.note = f"the search stopped after {budget} unions of small atoms"
    old = _old_basis(system, only_with) if only_with is not None else None
    for u in unions:
        atoms = small[np.asarray(u)]
        if old is not None and _determined_by(old, atoms):
            continue  # known before the new sets: already alerted (or accepted) then
        coef = _coefficients(system, proj, atoms)
        if len(result.findings) < MAX_SPARSE:
            coef = _basic(system, coef, atoms)
        scale = max(1.0, float(np.abs(coef).max(initial=0.0)))
        used = np.flatnonzero(np.abs(coef) > 1e-6 * scale)
        sources = tuple(sorted({lab for i in used for lab in system.labels[i]}))
        finding = Finding(sources, records_range(min_cell), _integer(system, coef, atoms))
        if finding not in result.findings:
            result.findings.append(finding)
    return result


def _old_basis(system: _System, new: set[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The sets known before the new ones (a set released before and again counts as known),
    with the non-null eigen-pairs of their Gram matrix as a row-space basis."""
    old = [i for i, labs in enumerate(system.labels) if any(lab not in new for lab in labs)]
    mat = system.incidence[old]
    if not old:
        return mat, np.zeros((0, 0))
    vals, vecs = np.linalg.eigh((mat @ mat.T).toarray())
    keep = vals > 1e-9 * max(1.0, float(vals.max(initial=0.0)))
    return mat, vecs[:, keep] / np.sqrt(vals[keep])[None, :]


def _determined_by(old: tuple[sparse.csr_matrix, np.ndarray], atoms: np.ndarray) -> bool:
    """Is the union of `atoms` in the row space of the old sets alone?"""
    mat, scaled = old
    if scaled.size == 0:
        return False
    proj = np.asarray(mat[:, atoms].sum(axis=1)).reshape(-1) @ scaled
    return float(atoms.size - proj @ proj) < TOL


def determined_unions(sets: Sequence[np.ndarray], min_cell: int) -> set[frozenset[int]]:
    """(Tests) the minimal determined unions as sets of atom numbers, numbered as
    `brute_force` numbers them: the audit's search without its naming."""
    system = _system(sets, [str(i) for i in range(len(sets))])
    small = np.flatnonzero((system.sizes > 0) & (system.sizes < min_cell))
    if small.size == 0:
        return set()
    proj = _projection(system, small)
    unions, _ = _unions(proj.k_small, system.sizes[small], min_cell, MAX_UNIONS)
    return {frozenset(int(small[i]) for i in u) for u in unions}


def brute_force(
    sets: Sequence[np.ndarray], min_cell: int
) -> set[frozenset[int]]:  # pragma: no cover - a test's reference
    """Every union of records (as a set of record keys) of size 1..min_cell − 1 that a rational
    combination of `sets` determines, by exhaustive enumeration over the atoms and exact
    rational elimination. Exponential: for small test systems only."""
    system = _system(sets, [str(i) for i in range(len(sets))])
    mat = system.incidence.toarray().astype(int)
    basis = _rational_row_basis(mat)
    n_atoms = system.sizes.size
    out: set[frozenset[int]] = set()
    for mask in range(1, 1 << n_atoms):
        atoms = [a for a in range(n_atoms) if mask >> a & 1]
        if not 0 < int(system.sizes[atoms].sum()) < min_cell:
            continue
        v = [Fraction(1 if a in atoms else 0) for a in range(n_atoms)]
        if _in_span(basis, v):
            out.add(frozenset(atoms))
    return out


def _rational_row_basis(mat: np.ndarray) -> list[tuple[int, list[Fraction]]]:
    """Reduced row echelon rows (pivot, row) of an integer matrix, in exact arithmetic."""
    rows = [[Fraction(int(x)) for x in r] for r in mat]
    basis: list[tuple[int, list[Fraction]]] = []
    for r in rows:
        r = _reduce(basis, r)
        piv = next((i for i, x in enumerate(r) if x != 0), None)
        if piv is None:
            continue
        r = [x / r[piv] for x in r]
        basis = [(p, [a - b[p] * c for a, c in zip(b, r, strict=True)]) for p, b in basis]
        basis.append((piv, r))
    return basis


def _reduce(basis: list[tuple[int, list[Fraction]]], v: list[Fraction]) -> list[Fraction]:
    v = list(v)
    for p, b in basis:
        if v[p] != 0:
            f = v[p]
            v = [a - f * c for a, c in zip(v, b, strict=True)]
    return v


def _in_span(basis: list[tuple[int, list[Fraction]]], v: list[Fraction]) -> bool:
    return all(x == 0 for x in _reduce(basis, v))


__all__ = [
    "AuditError",
    "AuditResult",
    "Finding",
    "audit",
    "brute_force",
    "determined_unions",
    "records_range",
]
