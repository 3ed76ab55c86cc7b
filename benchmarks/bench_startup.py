"""CLI start-up: how long `ccdp --help` takes, so that moving or adding commands cannot quietly
make every invocation slower (a command module that imports pandas at the top costs every user
about half a second, on every command, even `--help`).

    python benchmarks/bench_startup.py --runs 15
    python benchmarks/bench_startup.py --src ../before/src --src src   # two trees, one run

Times `python -m ccdp --help` (a fresh interpreter each time, output to /dev/null) with each
`--src` tree as PYTHONPATH (checked to be the ccdp actually imported), median and minimum of
`--runs` runs after one warm-up run (which also writes the .pyc files). Baselines in the same
run: `python -c pass` (the interpreter alone) and `python -c "import typer, rich"` (the CLI
framework, which no command layout can avoid). The runs are interleaved (one of each in turn) so
that load from other jobs on a shared machine falls on every row alike. The imports column is
the number of modules the process imports (`-X importtime`), which does not vary with the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def environment(src: Path | None) -> dict[str, str]:
    """The parent's environment with PYTHONPATH set to `src` (or removed), fixed width."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    env["COLUMNS"] = "100"
    return env


def check_tree(python: str, src: Path) -> None:
    """Fail unless `src` is the ccdp that `python -m ccdp` imports (an editable install of
    another tree must not be measured by mistake)."""
    got = subprocess.run(
        [python, "-c", "import ccdp; print(ccdp.__file__)"],
        env=environment(src),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(got).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"--src {src}: python imports ccdp from {got}, not from this tree")


def run_once(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def imports(argv: list[str], env: dict[str, str]) -> int:
    """How many modules the process imports (one `-X importtime` line each)."""
    err = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    ).stderr
    return sum(1 for line in err.splitlines() if line.startswith("import time:")) - 1  # header


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--src",
        type=Path,
        action="append",
        help="A source tree to put on PYTHONPATH (repeat to compare trees; default: ./src).",
    )
    parser.add_argument("--runs", type=int, default=15, help="Timed runs per row (median).")
    parser.add_argument("--python", default=sys.executable, help="The interpreter to time.")
    args = parser.parse_args()
    srcs: list[Path] = args.src or [ROOT / "src"]
    for src in srcs:
        check_tree(args.python, src)

    py = args.python
    rows: list[tuple[str, list[str], dict[str, str]]] = [
        ("`python -c pass`", [py, "-c", "pass"], environment(None)),
        ('`python -c "import typer, rich"`', [py, "-c", "import typer, rich"], environment(None)),
    ]
    rows += [
        (f"`ccdp --help` ({src})", [py, "-m", "ccdp", "--help"], environment(src)) for src in srcs
    ]
    for _, argv, env in rows:  # warm-up: .pyc files written, file cache filled
        run_once(argv, env)
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(args.runs):
        for i, (_, argv, env) in enumerate(rows):
            times[i].append(run_once(argv, env))

    base = statistics.median(times[1])
    print(f"{args.runs} runs per row, interleaved; {py} ({sys.version.split()[0]})\n")
    print("| what | median | min | imports | over `import typer, rich` |")
    print("|---|---|---|---|---|")
    for (what, argv, env), ts in zip(rows, times, strict=True):
        med = statistics.median(ts)
        over = f"{1000 * (med - base):+.0f} ms" if argv[1:2] == ["-m"] else "—"
        print(
            f"| {what} | {1000 * med:.0f} ms | {1000 * min(ts):.0f} ms | "
            f"{imports(argv, env)} | {over} |"
        )


if __name__ == "__main__":
    main()
