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
integer coefficients suffice). U isolates records when its size is 1 to `min_cell − 1`, so it
holds only atoms smaller than `min_cell`, at most `min_cell − 1` of them.

The search is exact and complete. Gaussian elimination over GF(p) (p a 31-bit prime), large
atoms' columns first, leaves the combinations that vanish on every large atom: the subspace V of
vectors over the small atoms that released counts determine, in reduced row echelon form
[I | F]. A union is determined exactly when its indicator x is in V, i.e. Σ_{a∈U} h_a = 0 for
the parity-check vectors h_a (−(a's row of F) for a pivot atom, a unit vector for a free one).
`_zero_sums` finds every minimal such U by a depth-first search that only ever adds an atom
cancelling a coordinate the running sum still has (so at most `min_cell − 1` levels, each
branching over the few atoms holding that coordinate), looks the last atom up, and stops a
branch that cannot cancel what is left. Every determined union is a disjoint union of the
minimal ones it reports. The prime is checked against the real rank of M (its Gram matrix's
eigenvalues; another prime is tried when it divides every maximal minor, so that GF(p) and the
rationals have the same row space), and every union found is checked over the reals too.

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

from ccdp.errors import CcdpError

TOL = 1e-7  # residuals below this are zero (counts are integers, the projection O(1))
MAX_STEPS = 5_000_000  # unions examined before the search stops and says so (a safety net)
PRIMES = (2_147_483_647, 2_147_483_629, 2_147_483_587)  # the exact arithmetic's fields
SEED = 0x5EC1_A0D1
MAX_SPARSE = 20  # findings whose combination is made sparse (and checked for integers)
# The audit's projection is dense linear algebra over the sets (O(n³) time, n² memory). Far
# above this bound it would take hours and more memory than a node has (50 registered studies
# with day-level KM tables on 300,000 tumours: 59,433 sets and 241,339 small atoms), so above it
# the audit stops first and says so (benchmarks/bench_audit.py).
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
    """The sets' Gram matrix's non-null eigen-pairs: the rank over the reals, a check that a
    union is in the row space, and the least-norm combination that gives it."""

    eig_vecs: np.ndarray
    eig_vals: np.ndarray

    def determined(self, system: _System, atoms: np.ndarray) -> bool:
        """1_Uᵀ P 1_U = |U| (P the projection onto the row space): U is determined."""
        rhs = np.asarray(system.incidence[:, atoms].sum(axis=1)).reshape(-1)
        proj = (rhs @ self.eig_vecs) / np.sqrt(self.eig_vals)
        return float(atoms.size - proj @ proj) < TOL


def _projection(system: _System) -> _Projection:
    mat = system.incidence
    vals, vecs = np.linalg.eigh((mat @ mat.T).toarray())
    keep = vals > 1e-9 * max(1.0, float(vals.max(initial=0.0)))
    return _Projection(vecs[:, keep], vals[keep])


def _unions(
    system: _System, small: np.ndarray, min_cell: int, rank: int, budget: int
) -> tuple[list[tuple[int, ...]], bool]:
    """Every minimal union U of small atoms of size < min_cell whose indicator is in the row
    space of the sets (as positions in `small`); False when the search stopped at `budget`
    steps (never in practice: see `_zero_sums`)."""
    mat = system.incidence
    large = np.flatnonzero(system.sizes >= min_cell)
    order = np.concatenate([large, small])
    cols = mat[:, order].toarray().astype(np.int64)
    best: tuple[int, int, np.ndarray, list[int]] | None = None
    for prime in PRIMES:
        rank_large, rows, pivots = _reduced(cols, large.size, prime)
        if best is None or rank_large + len(pivots) > best[0]:
            best = (rank_large + len(pivots), prime, rows, pivots)
        if best[0] == rank:
            break  # the prime divides no maximal minor: the same row space as over Q
    assert best is not None
    found, complete = _zero_sums(
        _parity(best[2], best[3], small.size, best[1]),
        system.sizes[small],
        min_cell - 1,
        best[1],
        budget,
    )
    # a rank that disagrees with the reals' (never seen): the search is not claimed complete
    return found, complete and best[0] == rank


def _reduced(cols: np.ndarray, n_large: int, prime: int) -> tuple[int, np.ndarray, list[int]]:
    """Gaussian elimination over GF(prime) of the sets' rows with the large atoms' columns
    first. Combinations that vanish on every large atom are spanned by the rows left once the
    large columns are eliminated; returned in reduced row echelon form over the small atoms'
    columns, with the rank of the large columns and the small columns' pivots."""
    a = cols % prime
    alive = np.ones(a.shape[0], dtype=bool)
    rank_large = 0
    for c in range(n_large):  # forward elimination: a pivot row is then out of the game
        nz = np.flatnonzero(alive & (a[:, c] != 0))
        if nz.size == 0:
            continue
        r = nz[np.argmin((a[nz, c:] != 0).sum(axis=1))]  # the sparsest row: little fill-in
        alive[r] = False
        rank_large += 1
        others = nz[nz != r]
        if others.size:
            f = a[others, c] * pow(int(a[r, c]), prime - 2, prime) % prime
            a[np.ix_(others, np.arange(c, a.shape[1]))] = (
                a[others, c:] - f[:, None] * a[r, c:][None, :] % prime
            ) % prime
    b = a[alive][:, n_large:]
    pivots: list[int] = []
    for c in range(b.shape[1]):  # reduced row echelon form on the small atoms
        r = len(pivots)
        if r == b.shape[0]:
            break
        nz = np.flatnonzero(b[r:, c] != 0)
        if nz.size == 0:
            continue
        k = r + int(nz[0])
        b[[r, k]] = b[[k, r]]
        b[r] = b[r] * pow(int(b[r, c]), prime - 2, prime) % prime
        others = np.flatnonzero(b[:, c] != 0)
        others = others[others != r]
        if others.size:
            b[others] = (b[others] - b[others, c][:, None] * b[r][None, :] % prime) % prime
        pivots.append(c)
    return rank_large, b[: len(pivots)], pivots


def _parity(rows: np.ndarray, pivots: list[int], n_small: int, prime: int) -> list[dict[int, int]]:
    """Each small atom's parity-check vector (sparse, over the free columns): the determined
    vectors x are those with Σ x_a h_a = 0. With the row space in reduced form [I | F], a pivot
    atom's vector is −(its row of F) and a free atom's is its own unit vector."""
    free = np.setdiff1d(np.arange(n_small), pivots)
    out: list[dict[int, int]] = [{int(c): 1} for c in range(n_small)]
    for i, c in enumerate(pivots):
        row = rows[i, free]
        nz = np.flatnonzero(row)
        out[c] = {int(free[j]): int(-row[j] % prime) for j in nz}
    return out


def _zero_sums(
    parity: list[dict[int, int]], sizes: np.ndarray, most: int, prime: int, budget: int
) -> tuple[list[tuple[int, ...]], bool]:
    """Every minimal set T of atoms of total size ≤ `most` whose parity vectors sum to zero.

    A depth-first search from each atom a, as the smallest atom of T: while the running sum
    is not zero, some coordinate j of it is not, and T must hold another atom whose vector is
    non-zero at j; the search branches over those atoms only, at the coordinate with the
    fewest (every minimal T is reached: at each step the atoms of T not yet taken cancel j).
    The last atom is looked up (the one whose vector is minus the running sum), and a branch
    stops when the atoms it may still add cannot cancel the running sum's support. Its depth
    is at most `most` atoms; it is exact and deterministic."""
    # atoms renumbered by decreasing support: the atoms a branch may still add (numbered after
    # its seed) then cancel at most the next `r` supports after the seed's own
    order = sorted(range(len(parity)), key=lambda a: (-len(parity[a]), a))
    parity = [parity[a] for a in order]
    sizes = sizes[np.asarray(order, dtype=np.int64)] if order else sizes
    lengths = np.array([len(v) for v in parity] + [0] * most, dtype=np.int64)
    holders: dict[int, list[int]] = {}
    closing: dict[tuple[tuple[int, int], ...], list[int]] = {}
    for a, vec in enumerate(parity):
        for j in vec:
            holders.setdefault(j, []).append(a)
        closing.setdefault(tuple(sorted(vec.items())), []).append(a)

    def reach(seed: int, r: int) -> int:
        """The most coordinates r atoms numbered after `seed` can cancel."""
        return int(lengths[seed + 1 : seed + 1 + r].sum())

    found: set[frozenset[int]] = set()
    steps = 0

    def close(seed: int, taken: frozenset[int], total: dict[int, int], size: int) -> None:
        need = tuple(sorted((k, -v % prime) for k, v in total.items()))
        for b in closing.get(need, ()):
            if b > seed and b not in taken and size + sizes[b] <= most:
                found.add(taken | {b})

    def extend(seed: int, taken: frozenset[int], total: dict[int, int], size: int, seen) -> bool:
        nonlocal steps
        close(seed, taken, total, size)
        j = min(total, key=lambda k: len(holders[k]))
        for b in holders[j]:
            room = most - size - int(sizes[b])  # records left once b is taken
            if b <= seed or b in taken or room < 1:
                continue  # room 0: only a closing atom, which `close` has looked up
            if len(total) - len(parity[b]) > reach(seed, room):
                continue
            grown = taken | {b}
            if grown in seen:
                continue
            seen.add(grown)
            steps += 1
            if steps > budget:
                return False
            acc = dict(total)
            for k, v in parity[b].items():
                x = (acc.get(k, 0) + v) % prime
                if x:
                    acc[k] = x
                else:
                    del acc[k]
            if not acc:
                found.add(grown)
            elif len(acc) <= reach(seed, room) and not extend(
                seed, grown, acc, size + int(sizes[b]), seen
            ):
                return False
        return True

    complete = True
    for a, vec in enumerate(parity):
        if sizes[a] > most:
            continue
        if not vec:
            found.add(frozenset([a]))
        elif len(vec) <= reach(a, most - int(sizes[a])) and not extend(
            a, frozenset([a]), dict(vec), int(sizes[a]), set()
        ):
            complete = False
            break
    minimal = [u for u in found if not any(v < u for v in found)]
    named = (tuple(sorted(order[a] for a in u)) for u in minimal)
    return sorted(named, key=lambda u: (len(u), u)), complete


def _coefficients(system: _System, proj: _Projection, atoms: np.ndarray) -> np.ndarray:
    """The least-norm combination of the sets whose atom weights are 1 on `atoms`, 0 elsewhere."""
    rhs = np.asarray(system.incidence[:, atoms].sum(axis=1)).reshape(-1)
    return np.asarray(proj.eig_vecs @ ((proj.eig_vecs.T @ rhs) / proj.eig_vals))


def _basic(system: _System, coef: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """A basic solution on few independent sets: fewer sets to name, and integral where a ±1
    combination exists (as for windows A + B − C). The sets the least-norm solution weighs
    most are tried first (4, 8, 16, … of them, up to all it uses); among the first that give
    the union, pivoted QR keeps independent ones. Falls back to the least-norm solution."""
    scale = max(1.0, float(np.abs(coef).max(initial=0.0)))
    used = np.flatnonzero(np.abs(coef) > 1e-6 * scale)
    if used.size == 0:
        return coef
    used = used[np.argsort(-np.abs(coef[used]), kind="stable")]
    target = np.zeros(system.incidence.shape[1])
    target[atoms] = 1.0
    k = 4
    while True:
        take = used[: min(k, used.size)]
        a = system.incidence[take].toarray().T  # atoms × candidate sets
        rows = np.flatnonzero(a.any(axis=1) | (target > 0))
        sol = np.linalg.lstsq(a[rows], target[rows], rcond=None)[0]
        if np.allclose(a @ sol, target, atol=1e-8):
            break
        if take.size == used.size:
            return coef
        k *= 2
    _, r, piv = linalg.qr(a[rows], mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int((diag > 1e-9 * max(1.0, float(diag.max(initial=0.0)))).sum())
    cols = piv[:rank]
    sol = np.linalg.lstsq(a[rows][:, cols], target[rows], rcond=None)[0]
    if not np.allclose(a[:, cols] @ sol, target, atol=1e-8):
        return coef
    out = np.zeros_like(coef)
    out[take[cols]] = sol
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
    budget: int = MAX_STEPS,
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
            f"exact audit's bound of {MAX_DENSE}"
        )
        return result
    proj = _projection(system)
    unions, result.complete = _unions(system, small, min_cell, proj.eig_vals.size, budget)
    if not result.complete:
        result.note = f"the search stopped after {budget} steps, or its exact rank disagreed"
    old = _old_basis(system, only_with) if only_with is not None else None
    for u in unions:
        atoms = small[np.asarray(u)]
        if not proj.determined(system, atoms):
            continue  # pragma: no cover - a coincidence modulo the prime, not over Q
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
    proj = _projection(system)
    unions, _ = _unions(system, small, min_cell, proj.eig_vals.size, MAX_STEPS)
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
