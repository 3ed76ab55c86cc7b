"""A profile checker read from the IGs' own FSH sources (PanCareSurPass 1.0.0, mCODE STU4).

The FSH files in ../shared/specs/fhir/ (beside the repository) are the independent reference:
this module parses them (aliases, rule sets with parameters, indented rules, `contains ... named`
slices, value sets) and checks a resource (a plain dict) against every profile named in its
`meta.profile`:

- cardinality rules (`* element 1..`, `..0`, `1..1`), with their parent profiles' rules when the
  parent is in the FSH sources; an element holding only the data-absent-reason extension counts
  as present (FHIR allows the extension on any element);
- must-support flags (`MS`): an absent MS element is a warning, never an error;
- fixed codes and patterns (`* code = LNC#97509-4`, `* type = #collection`) where present;
- required bindings (`from VS (required)`, or `from VS` with no strength: FSH's default is
  required) to value sets defined in the FSH: enumerated codes, or every code of a system.

Not checked (parents are listed in `Profile.unchecked`): slices other than extensions
(pattern/type slicing), invariants, fixed values other than codes, `only` type rules, and rules
of parents outside the FSH sources (IPS, US Core). Those need the compiled StructureDefinitions
and a full validator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "fhir"  # ../shared
DAR_URL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
_KEYWORD = re.compile(r"^([A-Za-z]+):\s*(.*)$")
_CARD = re.compile(r"^(\d*)\.\.(\d+|\*)?$")


@dataclass(frozen=True)
class Finding:
    """One problem: `error` breaks the profile, `warning` is an absent must-support element."""

    level: str
    profile: str
    resource: str
    element: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.resource} [{self.profile}] {self.element}: {self.message}"


@dataclass
class Rule:
    path: str
    min: int | None = None
    max: str | None = None
    ms: bool = False
    valueset: str | None = None
    fixed: tuple[str | None, str] | None = None  # `= system#code` (a pattern or fixed value)


@dataclass
class Entity:
    """A Profile, Extension, ValueSet, CodeSystem or RuleSet block of one IG."""

    kind: str
    name: str
    ig: IG
    meta: dict[str, str] = field(default_factory=dict)
    lines: list[tuple[int, str]] = field(default_factory=list)  # (indent, rule text)
    params: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        folder = {"ValueSet": "ValueSet", "CodeSystem": "CodeSystem"}.get(
            self.kind, "StructureDefinition"
        )
        return f"{self.ig.canonical}/{folder}/{self.meta.get('Id', self.name)}"


# -- FSH text ----------------------------------------------------------------------------------
def _flatten(text: str) -> str:
    """FSH without comments, every string literal on one line (newlines in it dropped)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith('"""', i):
            end = text.find('"""', i + 3)
            end = n if end < 0 else end
            out.append('"' + text[i + 3 : end].replace("\n", " ").replace('"', "'") + '"')
            i = end + 3
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1].replace("\n", " "))
            i = j + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            skipped = text[i : (n if end < 0 else end + 2)]
            out.append("\n" * skipped.count("\n"))
            i = n if end < 0 else end + 2
        elif text.startswith("//", i) and (i == 0 or text[i - 1] in " \t\n"):
            end = text.find("\n", i)
            i = n if end < 0 else end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class IG:
    """One IG's FSH sources: aliases and named blocks."""

    def __init__(self, folder: Path) -> None:
        config = (folder / "sushi-config.yaml").read_text(encoding="utf-8")
        found = re.search(r"^canonical:\s*(\S+)", config, re.M)
        assert found, f"{folder}: no canonical in sushi-config.yaml"
        self.canonical = found.group(1)
        self.aliases: dict[str, str] = {}
        self.entities: dict[str, Entity] = {}
        for path in sorted((folder / "input" / "fsh").rglob("*.fsh")):
            self._read(_flatten(path.read_text(encoding="utf-8")))

    def _read(self, text: str) -> None:
        current: Entity | None = None
        for raw in text.splitlines():
            if not raw.strip():
                continue
            stripped = raw.strip()
            key = _KEYWORD.match(raw) if not raw[0].isspace() else None
            if key and not stripped.startswith("*"):
                word, value = key.group(1), key.group(2).strip()
                if word == "Alias":
                    name, _, url = value.partition("=")
                    self.aliases[name.strip()] = url.strip()
                    current = None
                elif word in (
                    "Profile",
                    "Extension",
                    "ValueSet",
                    "CodeSystem",
                    "RuleSet",
                    "Instance",
                    "Logical",
                    "Invariant",
                    "Mapping",
                    "Resource",
                ):
                    name, _, params = value.partition("(")
                    current = Entity(word, name.strip(), self)
                    if params:
                        current.params = [p.strip() for p in params.rstrip(")").split(",")]
                    self.entities[f"{word}:{current.name}"] = current
                elif current is not None:
                    current.meta[word] = value.strip('"')
            elif current is not None and stripped.startswith("*"):
                indent = (len(raw) - len(raw.lstrip())) // 2
                current.lines.append((indent, stripped[1:].strip()))
            elif current is not None and current.lines:  # a rule continued on the next line
                indent, prev = current.lines[-1]
                current.lines[-1] = (indent, f"{prev} {stripped}")

    def get(self, kind: str, name: str) -> Entity | None:
        return self.entities.get(f"{kind}:{name}")

    def system(self, name: str) -> str:
        """A code system or extension named by alias, FSH name or URL."""
        if name in self.aliases:
            return self.aliases[name]
        for kind in ("CodeSystem", "Extension", "Profile", "ValueSet"):
            ent = self.get(kind, name)
            if ent is not None:
                return ent.url
        return name


@cache
def igs() -> tuple[IG, ...]:
    return IG(SPECS / "pcsp"), IG(SPECS / "mcode")


def _find(kind: str, name: str, prefer: IG | None = None) -> Entity | None:
    for ig in ([prefer] if prefer else []) + list(igs()):
        ent = ig.get(kind, name)
        if ent is not None:
            return ent
    return None


# -- profiles: rules ---------------------------------------------------------------------------
@dataclass
class Profile:
    url: str
    name: str
    rules: list[Rule]
    slices: dict[str, str]  # "bodySite.extension[lateralityQualifier]" -> extension URL
    unchecked: list[str]


def _expand(ent: Entity, args: list[str] | None = None, depth: int = 0) -> list[tuple[int, str]]:
    """A block's rules with `insert`ed rule sets expanded (parameters substituted)."""
    out: list[tuple[int, str]] = []
    for indent, line in ent.lines:
        if args is not None:
            for name, value in zip(ent.params, args, strict=False):
                line = line.replace("{" + name + "}", value)
        if line.startswith("insert "):
            call = line[len("insert ") :].strip()
            name, _, params = call.partition("(")
            rs = _find("RuleSet", name.strip(), ent.ig)
            if rs is not None and depth < 10:
                values = [p.strip() for p in params.rstrip(")").split(",")] if params else None
                out.extend((indent + i, text) for i, text in _expand(rs, values, depth + 1))
            continue
        out.append((indent, line))
    return out


def _parse_rules(ent: Entity) -> tuple[list[Rule], dict[str, str]]:
    rules: list[Rule] = []
    slices: dict[str, str] = {}
    stack: list[str] = []
    for indent, line in _expand(ent):
        head = line.split()[0] if line.split() else ""
        prefix = ".".join(stack[:indent])
        if head.startswith("^"):
            continue
        path = f"{prefix}.{head}" if prefix and head != "." else head
        del stack[indent:]
        stack.append(path)
        rest = line[len(head) :].strip()
        if rest.startswith("contains"):
            _contains(ent, path, rest[len("contains") :], rules, slices)
        elif rest.startswith("from "):
            vs = rest.split()[1]
            strength = re.search(r"\((\w+)\)", rest)
            if strength is None or strength.group(1) == "required":
                rules.append(Rule(path, valueset=vs))
        elif rest.startswith("= ") and "#" in rest.split()[1]:
            system, _, code = rest.split()[1].partition("#")
            rules.append(Rule(path, fixed=(ent.ig.system(system) if system else None, code)))
        elif " and " in line and line.rstrip().endswith("MS"):
            for p in line[: -len("MS")].split(" and "):
                rules.append(Rule(f"{prefix}.{p.strip()}" if prefix else p.strip(), ms=True))
        else:
            words = rest.split()
            if words and _CARD.match(words[0]):
                lo, hi = _CARD.match(words[0]).groups()  # type: ignore[union-attr]
                rules.append(Rule(path, int(lo) if lo else None, hi, "MS" in words[1:]))
            elif words and words[0] == "MS":
                rules.append(Rule(path, ms=True))
    return rules, slices


def _contains(ent: Entity, path: str, text: str, rules: list[Rule], slices: dict[str, str]) -> None:
    for item in text.split(" and "):
        words = item.split()
        if "named" in words:
            at = words.index("named")
            url, name, tail = ent.ig.system(words[at - 1]), words[at + 1], words[at + 2 :]
            slices[f"{path}[{name}]"] = url
        elif words:
            name, tail = words[0], words[1:]
        else:
            continue
        card = _CARD.match(tail[0]) if tail else None
        if card:
            lo, hi = card.groups()
            rules.append(Rule(f"{path}[{name}]", int(lo) if lo else None, hi, "MS" in tail[1:]))


@cache
def profile(url: str) -> Profile | None:
    """A profile of the FSH sources by canonical URL, with its FSH parents' rules first."""
    for ig in igs():
        for ent in ig.entities.values():
            if ent.kind == "Profile" and ent.url == url:
                return _profile(ent)
    return None


def _profile(ent: Entity) -> Profile:
    rules, slices = _parse_rules(ent)
    unchecked: list[str] = []
    parent_name = ent.meta.get("Parent", "")
    parent = _find("Profile", parent_name, ent.ig)
    if parent is not None:
        up = _profile(parent)
        rules, slices = up.rules + rules, {**up.slices, **slices}
        unchecked += up.unchecked
    elif parent_name.startswith("$") or (parent_name[:1].isupper() and parent_name not in _BASE):
        unchecked.append(f"rules of parent {parent_name} (not in the FSH sources)")
    return Profile(ent.url, ent.name, rules, slices, unchecked)


_BASE = {
    "Patient",
    "Condition",
    "Observation",
    "Procedure",
    "MedicationStatement",
    "MedicationAdministration",
    "MedicationRequest",
    "Specimen",
    "Bundle",
    "Composition",
    "PlanDefinition",
    "Encounter",
    "Organization",
    "Location",
    "CarePlan",
    "ResearchSubject",
}


# -- value sets --------------------------------------------------------------------------------
@dataclass
class Expansion:
    codes: set[tuple[str, str]] = field(default_factory=set)
    systems: set[str] = field(default_factory=set)
    complete: bool = True  # False when a part could not be read from the FSH (a filter ...)

    def holds(self, system: str | None, code: str | None) -> bool:
        return (
            (system, code) in self.codes
            or system in self.systems
            or (system is None and any(c == code for _, c in self.codes))
        )


@cache
def expansion(name: str) -> Expansion | None:
    ent = _find("ValueSet", name) or next(
        (
            e
            for ig in igs()
            for e in ig.entities.values()
            if e.kind == "ValueSet" and name in (e.url, e.meta.get("Id"))
        ),
        None,
    )
    if ent is None:
        return None
    out = Expansion()
    for _, line in _expand(ent):
        text = re.sub(r'"[^"]*"', "", line).strip()
        text = text.removeprefix("include ").strip()
        if text.startswith("exclude"):
            out.complete = False
        elif text.startswith("codes from system"):
            words = text.split()
            out.systems.add(ent.ig.system(words[3]))
            if "where" in words:
                out.complete = False
        elif text.startswith("codes from valueset"):
            inner = expansion(text.split()[3])
            if inner is None:
                out.complete = False
            else:
                out.codes |= inner.codes
                out.systems |= inner.systems
                out.complete &= inner.complete
        elif "#" in text and not text.startswith("^"):
            sys, _, code = text.split()[0].partition("#")
            out.codes.add((ent.ig.system(sys), code))
    return out


# -- checking a resource -----------------------------------------------------------------------
def _split(path: str) -> list[str]:
    return re.findall(r"[^.\[]+(?:\[[^\]]*\])?", path)


def _children(node: Any, segment: str, slices: dict[str, str], here: str) -> list[Any] | None:
    """The values of `segment` under one node (None: this segment cannot be checked)."""
    if not isinstance(node, dict):
        return []
    name, _, slice_name = segment.partition("[")
    slice_name = slice_name.rstrip("]")
    if slice_name == "x":
        bases = sorted({k.lstrip("_") for k in node if re.match(rf"^_?{name}[A-Z]", k)})
        return [v for base in bases for v in _values(node, base)]
    values = _values(node, name)
    if slice_name:
        url = slices.get(f"{here}{'.' if here else ''}{segment}")
        if name not in ("extension", "modifierExtension") or url is None:
            return None
        return [v for v in values if isinstance(v, dict) and v.get("url") == url]
    return values


def _values(node: dict[str, Any], key: str) -> list[Any]:
    """Values of `key`; a primitive and its `_key` twin (extensions) count once per position."""
    plain, ext = node.get(key), node.get(f"_{key}")
    plain_list = plain if isinstance(plain, list) else ([] if plain is None else [plain])
    ext_list = ext if isinstance(ext, list) else ([] if ext is None else [ext])
    out = []
    for i in range(max(len(plain_list), len(ext_list))):
        value = plain_list[i] if i < len(plain_list) else None
        out.append(value if value is not None else (ext_list[i] if i < len(ext_list) else None))
    return [v for v in out if v is not None]


def _nodes(resource: dict[str, Any], path: str, slices: dict[str, str]) -> list[Any] | None:
    nodes: list[Any] = [resource]
    here = ""
    for segment in _split(path):
        nxt: list[Any] = []
        for node in nodes:
            kids = _children(node, segment, slices, here)
            if kids is None:
                return None
            nxt.extend(kids)
        nodes, here = nxt, f"{here}{'.' if here else ''}{segment}"
    return nodes


def _is_absent_reason(node: Any) -> bool:
    return isinstance(node, dict) and any(
        isinstance(e, dict) and e.get("url") == DAR_URL for e in node.get("extension") or []
    )


def check(resource: dict[str, Any]) -> list[Finding]:
    """Every error and warning of `resource` against its FSH profiles (unknown ones: none)."""
    out: list[Finding] = []
    who = f"{resource.get('resourceType')}/{resource.get('id')}"
    for url in (resource.get("meta") or {}).get("profile") or []:
        prof = profile(url)
        if prof is None:
            continue
        for rule in prof.rules:
            out.extend(_check_rule(resource, prof, rule, who))
    return out


def _check_rule(resource: dict[str, Any], prof: Profile, rule: Rule, who: str) -> list[Finding]:
    segments = _split(rule.path)
    if not segments or rule.path == ".":
        return []
    parent_path = ".".join(segments[:-1])
    parents = _nodes(resource, parent_path, prof.slices) if parent_path else [resource]
    if parents is None:
        return []
    out: list[Finding] = []
    here = parent_path
    for parent in parents:
        kids = _children(parent, segments[-1], prof.slices, here)
        if kids is None:
            return []
        if rule.min is not None and len(kids) < rule.min:
            out.append(
                Finding(
                    "error",
                    prof.name,
                    who,
                    rule.path,
                    f"{rule.min}.. required, {len(kids)} present",
                )
            )
        if rule.max not in (None, "*") and len(kids) > int(rule.max):  # type: ignore[arg-type]
            out.append(
                Finding(
                    "error",
                    prof.name,
                    who,
                    rule.path,
                    f"at most {rule.max} allowed, {len(kids)} present",
                )
            )
        if rule.ms and not kids:
            out.append(Finding("warning", prof.name, who, rule.path, "must-support, absent"))
        if rule.valueset:
            out.extend(_check_binding(kids, prof, rule, who))
        if rule.fixed:
            out.extend(_check_fixed(kids, prof, rule, who))
    return out


def _check_binding(kids: list[Any], prof: Profile, rule: Rule, who: str) -> list[Finding]:
    vs = expansion(rule.valueset or "")
    if vs is None:
        return []
    out = []
    for node in kids:
        if _is_absent_reason(node) and not (isinstance(node, dict) and node.get("coding")):
            continue
        if isinstance(node, dict) and "coding" in node:
            pairs = [(c.get("system"), c.get("code")) for c in node["coding"]]
        elif isinstance(node, dict):
            pairs = [(node.get("system"), node.get("code"))]
        else:
            pairs = [(None, str(node))]
        if not any(vs.holds(s, c) for s, c in pairs):
            level = "error" if vs.complete else "warning"
            out.append(
                Finding(
                    level,
                    prof.name,
                    who,
                    rule.path,
                    f"{pairs} not in required value set {rule.valueset}",
                )
            )
    return out


def _check_fixed(kids: list[Any], prof: Profile, rule: Rule, who: str) -> list[Finding]:
    system, code = rule.fixed or (None, "")
    out = []
    for node in kids:
        if isinstance(node, dict) and "coding" in node:
            pairs = [(c.get("system"), c.get("code")) for c in node["coding"]]
        elif isinstance(node, dict):
            pairs = [(node.get("system"), node.get("code"))]
        else:
            pairs = [(system, str(node))]
        if not any(c == code and (system is None or s == system) for s, c in pairs):
            out.append(
                Finding(
                    "error",
                    prof.name,
                    who,
                    rule.path,
                    f"{pairs} lacks the fixed code {system}#{code}",
                )
            )
    return out
