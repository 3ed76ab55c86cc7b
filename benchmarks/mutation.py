"""A small mutation run: change one operator or constant in a module, run the tests that cover
it, and count the changes no test notices (survivors). No dependency beyond pytest: mutmut and
cosmic-ray rewrite the tree in place and want their own config, this runs in a throw-away copy.

Operators (one change per mutant, over the module's code, docstrings left alone):
comparisons `<`<->`<=`, `>`<->`>=`, `==`<->`!=`, `is`<->`is not`, `in`<->`not in`;
arithmetic `+`<->`-`, `*`<->`/`; `and`<->`or`; `not x` -> `x`; an integer `n` -> `n + 1`;
`True`<->`False`; `return x` -> `return None`; one string dropped from a set, tuple or list
literal of strings (code tables).

Each mutant is written into a copy of src/ and tests/ in a temporary folder (the worktree is
never touched), its module's bytecode cache is removed, and the module's test subset runs with
`-x -q -p no:cacheprovider` under a timeout. Exit status 0 is "survived", a timeout is
"timeout", anything else (a failing test, an import error) is "killed".

    python benchmarks/mutation.py --module disclosure --sample 30 --seed 26 --json out.json
    python benchmarks/mutation.py --list --module analyses/km.py
    python benchmarks/mutation.py --only "disclosure/suppress.py#12"
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ccdp"

# target group -> modules under src/ccdp
GROUPS: dict[str, list[str]] = {
    "disclosure": sorted(
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "disclosure").glob("*.py")
        if p.name != "__init__.py"
    ),
    "km": ["analyses/km.py"],
    "consent": ["governance/consent.py"],
    "iccc": ["terminology/iccc.py"],
}

# module -> the tests that import it, fastest first (-x stops at the first failure)
D = "tests/disclosure/"
TESTS: dict[str, list[str]] = {
    "disclosure/case.py": [D + "test_referral_disclosure.py"],
    "disclosure/consent_note.py": ["tests/governance/test_consent_disclosure.py"],
    "disclosure/context.py": [
        D + "test_min_cell_boundary.py",
        D + "test_gate.py",
        D + "test_perturb.py",
    ],
    "disclosure/event_times.py": [
        D + "test_event_times.py",
        "tests/analyses/test_grouped_times.py",
    ],
    "disclosure/gate.py": [D + "test_min_cell_boundary.py", D + "test_gate.py"],
    "disclosure/ledger.py": [D + "test_ledger.py", D + "test_event_times.py"],
    "disclosure/perturb.py": [D + "test_perturb.py"],
    "disclosure/policy.py": [D + "test_min_cell_boundary.py", D + "test_gate.py"],
    "disclosure/refusals.py": [D + "test_gate.py", D + "test_randomise_strata.py"],
    "disclosure/registered_audit.py": [D + "test_registered_audit.py"],
    "disclosure/strata.py": [D + "test_randomise_strata.py"],
    "disclosure/suppress.py": [D + "test_suppress_property.py", D + "test_suppressed_sums.py"],
    "analyses/km.py": [
        "tests/analyses/test_km_median_boundary.py",
        "tests/analyses/test_km.py",
        "tests/analyses/test_grouped_times.py",
    ],
    "governance/consent.py": [
        "tests/governance/test_consent_codes.py",
        "tests/governance/test_consent.py",
    ],
    "terminology/iccc.py": ["tests/terminology/test_iccc.py"],
}
# the new tests written to kill survivors run with their module's subset
EXTRA: dict[str, list[str]] = {
    "disclosure/": [D + "test_mutants.py"],
    "analyses/km.py": ["tests/analyses/test_km_mutants.py"],
    "governance/consent.py": ["tests/governance/test_consent_mutants.py"],
    "terminology/iccc.py": ["tests/terminology/test_iccc_mutants.py"],
}

SWAP_CMP: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
SWAP_BIN: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}
SWAP_BOOL: dict[type, type] = {ast.And: ast.Or, ast.Or: ast.And}


class MutationError(Exception):
    """The run cannot start: an unknown module, or a test subset that fails unmutated."""


@dataclass
class Site:
    """One place a mutant can be made: the node, a label, and how to build the replacement."""

    node: ast.AST
    label: str
    make: Callable[[ast.AST], ast.AST]


@dataclass
class Mutant:
    """A mutant by module and site number (stable for a given source), and what it changes."""

    module: str
    index: int
    line: int
    label: str
    source: str

    @property
    def ident(self) -> str:
        return f"{self.module}#{self.index}"


@dataclass
class Result:
    """How one mutant fared."""

    ident: str
    line: int
    label: str
    source: str
    outcome: str  # killed | survived | timeout
    seconds: float
    detail: str


def _sym(op: ast.AST) -> str:
    """The operator as written in source."""
    probe = {
        ast.cmpop: lambda o: ast.unparse(ast.Compare(ast.Name("a"), [o], [ast.Name("b")])),
        ast.operator: lambda o: ast.unparse(ast.BinOp(ast.Name("a"), o, ast.Name("b"))),
        ast.boolop: lambda o: ast.unparse(ast.BoolOp(o, [ast.Name("a"), ast.Name("b")])),
    }
    for base, render in probe.items():
        if isinstance(op, base):
            return render(op)[2:-2]
    raise TypeError(op)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring constants: text, not code."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        text = first.value if isinstance(first, ast.Expr) else None
        if isinstance(text, ast.Constant) and isinstance(text.value, str):
            found.add(id(text))
    return found


def _annotations(tree: ast.AST) -> set[int]:
    """ids of every node inside a type annotation or `__all__`: not behaviour, so not mutated."""
    found: set[int] = set()
    for node in ast.walk(tree):
        notes: list[ast.AST | None] = []
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            notes.append(node.value)
        elif isinstance(node, ast.AnnAssign | ast.arg):
            notes.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            notes.append(node.returns)
        for note in notes:
            if note is not None:
                found.update(id(n) for n in ast.walk(note))
    return found


def _cmp_site(node: ast.Compare, i: int) -> Site:
    old = node.ops[i]
    new = SWAP_CMP[type(old)]()

    def make(n: ast.AST) -> ast.AST:
        assert isinstance(n, ast.Compare)
        n.ops[i] = new
        return n

    return Site(node, f"`{_sym(old)}` -> `{_sym(new)}`", make)


def _drop_site(node: ast.Set | ast.Tuple | ast.List, i: int) -> Site:
    dropped = node.elts[i]
    assert isinstance(dropped, ast.Constant)

    def make(n: ast.AST) -> ast.AST:
        assert isinstance(n, ast.Set | ast.Tuple | ast.List)
        del n.elts[i]
        return n

    return Site(node, f"drop {dropped.value!r} from a literal", make)


def _set_op(attr: str, new: type) -> Callable[[ast.AST], ast.AST]:
    def make(n: ast.AST) -> ast.AST:
        setattr(n, attr, new())
        return n

    return make


def _constant(value: int) -> Callable[[ast.AST], ast.AST]:
    return lambda n: ast.Constant(value)


def _operand(n: ast.AST) -> ast.AST:
    assert isinstance(n, ast.UnaryOp)
    return n.operand


def sites(tree: ast.AST) -> Iterator[Site]:
    """Every mutation site, in `ast.walk` order (deterministic for a given source)."""
    skip = _docstrings(tree) | _annotations(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAP_CMP:
                    yield _cmp_site(node, i)
        elif isinstance(node, ast.BinOp) and type(node.op) in SWAP_BIN:
            new = SWAP_BIN[type(node.op)]
            yield Site(node, f"`{_sym(node.op)}` -> `{_sym(new())}`", _set_op("op", new))
        elif isinstance(node, ast.BoolOp):
            new = SWAP_BOOL[type(node.op)]
            yield Site(node, f"`{_sym(node.op)}` -> `{_sym(new())}`", _set_op("op", new))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield Site(node, "`not x` -> `x`", _operand)
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            flip = not node.value
            yield Site(node, f"`{node.value}` -> `{flip}`", _constant(flip))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            up = node.value + 1
            yield Site(node, f"`{node.value}` -> `{up}`", _constant(up))
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield Site(node, "`return x` -> `return None`", lambda n: ast.Return(None))
        elif isinstance(node, ast.Set | ast.Tuple | ast.List) and _strings(node.elts):
            for i in range(len(node.elts)):
                yield _drop_site(node, i)


def _strings(elts: list[ast.expr]) -> bool:
    """A literal of two or more strings: a code table."""
    return len(elts) >= 2 and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts
    )


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, make: Callable[[ast.AST], ast.AST]):
        self.target, self.make = target, make

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.make(node)
        return self.generic_visit(node)


def mutants_of(module: str) -> list[Mutant]:
    """All mutants of one module (path under src/ccdp)."""
    text = (PACKAGE / module).read_text()
    lines = text.splitlines()
    out = []
    for i, site in enumerate(sites(ast.parse(text))):
        line = getattr(site.node, "lineno", 0)
        out.append(Mutant(module, i, line, site.label, lines[line - 1].strip() if line else ""))
    return out


def mutated_source(module: str, index: int) -> str:
    """The module's source with mutant `index` applied (re-rendered with `ast.unparse`)."""
    tree = ast.parse((PACKAGE / module).read_text())
    site = list(sites(tree))[index]
    new = _Replace(site.node, site.make).visit(tree)
    return ast.unparse(ast.fix_missing_locations(new))


def tests_for(module: str, override: list[str] | None, root: Path = ROOT) -> list[str]:
    """The test subset for a module: the mapped tests plus the mutant-killing tests (those
    that exist under `root`, the sandbox a run copied)."""
    if override:
        return override
    extra = [t for key, ts in EXTRA.items() if module.startswith(key) for t in ts]
    return TESTS[module] + [t for t in extra if (root / t).exists()]


class Sandbox:
    """A copy of src/, tests/ and pyproject.toml in which one module at a time is mutated."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ccdp-mutation-"))
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("src", "tests"):
            shutil.copytree(ROOT / part, self.dir / part, ignore=ignore)
        shutil.copy2(ROOT / "pyproject.toml", self.dir / "pyproject.toml")

    def run(self, tests: list[str], timeout: float) -> tuple[str, float, str]:
        """Run the tests in the sandbox: (outcome, seconds, last output line)."""
        env = dict(os.environ, PYTHONPATH=str(self.dir / "src"), PYTHONDONTWRITEBYTECODE="1")
        env.pop("CI", None)
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, cwd=self.dir, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - start, f"over {timeout:.0f} s"
        seconds = time.monotonic() - start
        tail = (proc.stdout.strip().splitlines() or [""])[-1]
        return ("survived" if proc.returncode == 0 else "killed"), seconds, tail

    def apply(self, module: str, source: str) -> None:
        path = self.dir / "src" / "ccdp" / module
        path.write_text(source)
        stamp = time.time() + 1
        os.utime(path, (stamp, stamp))  # a stale .pyc must never stand in for the mutant
        shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)

    def restore(self, module: str) -> None:
        self.apply(module, (PACKAGE / module).read_text())

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def select(args: argparse.Namespace) -> list[Mutant]:
    """The mutants asked for: by group or module, filtered, sampled, limited."""
    if args.only:
        wanted = set(args.only)
        named = sorted({o.split("#")[0] for o in wanted})
        return [m for mod in named for m in mutants_of(mod) if m.ident in wanted]
    modules: list[str] = []
    for name in args.module or list(GROUPS):
        if name in GROUPS:
            modules += GROUPS[name]
        elif (PACKAGE / name).is_file():
            modules.append(name)
        else:
            raise MutationError(f"--module {name}: not a group ({', '.join(GROUPS)}) nor a file")
    pool = [m for mod in modules for m in mutants_of(mod)]
    if args.match:
        pool = [m for m in pool if re.search(args.match, f"{m.label} | {m.source}")]
    if args.sample and args.sample < len(pool):
        pool = sorted(random.Random(args.seed).sample(pool, args.sample), key=_order)
    return pool[: args.limit] if args.limit else pool


def _order(m: Mutant) -> tuple[str, int]:
    return (m.module, m.index)


def baseline(box: Sandbox, tests: list[str], timeout: float) -> float:
    """Run a subset unmutated once: it must pass, and its time sets the mutant timeout."""
    outcome, seconds, tail = box.run(tests, timeout)
    if outcome != "survived":
        raise MutationError(f"the unmutated tests do not pass ({outcome}): {tests}: {tail}")
    return seconds


def run(mutants: list[Mutant], args: argparse.Namespace) -> list[Result]:
    """Run each mutant against its module's tests, printing progress as it goes."""
    box = Sandbox()
    limits: dict[tuple[str, ...], float] = {}
    results: list[Result] = []
    try:
        for i, m in enumerate(mutants, 1):
            tests = tests_for(m.module, args.tests, box.dir)
            key = tuple(tests)
            if key not in limits:
                if args.no_baseline:
                    limits[key] = args.timeout
                else:
                    took = baseline(box, tests, args.timeout)
                    limits[key] = max(args.min_timeout, 4 * took)
                    print(f"  baseline {' '.join(tests)}: {took:.1f} s", flush=True)
            box.apply(m.module, mutated_source(m.module, m.index))
            try:
                outcome, seconds, tail = box.run(tests, limits[key])
            finally:
                box.restore(m.module)
            results.append(Result(m.ident, m.line, m.label, m.source, outcome, seconds, tail))
            if args.json:  # after every mutant, so a run cut short keeps what it measured
                write_json(args.json, results)
            print(
                f"[{i}/{len(mutants)}] {m.ident} line {m.line} {m.label}: {outcome} "
                f"({seconds:.1f} s)  | {m.source[:70]}",
                flush=True,
            )
    finally:
        box.close()
    return results


def summary(results: list[Result]) -> dict[str, dict[str, float]]:
    """Counts per module group and overall, with the survival rate."""
    table: dict[str, dict[str, float]] = {}
    for r in results:
        module = r.ident.split("#")[0]
        group = "disclosure" if module.startswith("disclosure/") else module
        for key in (group, "all"):
            row = table.setdefault(key, {"mutants": 0, "killed": 0, "survived": 0, "timeout": 0})
            row["mutants"] += 1
            row[r.outcome] += 1
    for row in table.values():
        row["survival_rate"] = round(row["survived"] / row["mutants"], 3)
    return table


def write_json(path: Path, results: list[Result]) -> None:
    """The summary and every result, as JSON."""
    body = {"summary": summary(results), "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(body, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", help="group or file under src/ccdp (repeat)")
    ap.add_argument("--only", action="append", help="one mutant by id, e.g. analyses/km.py#3")
    ap.add_argument("--match", help="regex on 'label | source line'")
    ap.add_argument("--sample", type=int, help="draw N mutants (deterministic with --seed)")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--limit", type=int, help="stop after N mutants")
    ap.add_argument("--tests", nargs="+", help="test paths instead of the module's mapping")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds, the baseline's cap")
    ap.add_argument("--min-timeout", type=float, default=120.0, help="seconds per mutant floor")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    try:
        mutants = select(args)
    except MutationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.ident} line {m.line} {m.label} | {m.source}")
        print(f"{len(mutants)} mutants")
        return 0
    try:
        results = run(mutants, args)
    except MutationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = summary(results)
    for key, row in table.items():
        print(
            f"{key}: {row['mutants']:.0f} mutants, {row['killed']:.0f} killed, "
            f"{row['survived']:.0f} survived, {row['timeout']:.0f} timeout, "
            f"survival {row['survival_rate']:.1%}"
        )
    for r in results:
        if r.outcome == "survived":
            print(f"SURVIVED {r.ident} line {r.line} {r.label} | {r.source}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
