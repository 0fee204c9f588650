"""Mutation testing of the pure modules: `./run.sh mutate [module ...]` runs mutmut (configured under
[tool.mutmut] in pyproject.toml) on each module named (default: all of them) and prints the table
docs/development.md keeps: mutants, killed, equivalent, survived, the share of the non-equivalent ones
killed, and the time taken. `--table` prints the table of the last runs without running anything.

`--sample N` runs N of a module's mutants drawn at random (seed 0) instead of all: the table then counts
the checked ones, and says how many of all were. `--again` reruns a module's survivors (after new tests).
Equivalent mutants (changes no test can see because the behaviour is the same) are listed, each with why, in
tools/equivalent_mutants.toml; a listed mutant that a test kills is reported as killed."""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tools" / "equivalent_mutants.toml"
GOAL = 0.85  # of the non-equivalent mutants killed, per module
# mutmut names a mutant <module>.x_<function>__mutmut_<n> or <module>.xǁ<Class>ǁ<method>__mutmut_<n>
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ]")
KILLED = {"killed", "timeout", "segfault"}  # a timeout or crash is a test noticing the change
UNCHECKED = {"not checked", "check was interrupted by user"}


def modules() -> list[str]:
    """The configured modules, as dotted names (remixer.decoding.plan)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [path.removesuffix(".py").replace("/", ".") for path in config["only_mutate"]]


def resolve(name: str) -> str:
    """A module as the user names it (midi, decoding.plan, remixer.mix) -> its dotted name, or exit 2."""
    for module in modules():
        if module in (name, f"remixer.{name}"):
            return module
    sys.exit(f"mutate: no module {name!r}; these are configured: "
             f"{', '.join(m.removeprefix('remixer.') for m in modules())}")


def statuses() -> dict[str, str]:
    """Every mutant mutmut has results for -> its status (killed, survived, no tests, timeout, ...)."""
    listed = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    found = {}
    for line in listed.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def chosen_mutants(module: str, sample: int) -> list[str]:
    """What `mutmut run` is given: the module's pattern, or `sample` of its mutants drawn at random."""
    if sample <= 0:
        return [f"{module}.*"]
    names = sorted(name for name in statuses() if (match := NAME.match(name)) and match["module"] == module)
    if not names:  # mutmut lists a module's mutants once it has made them: make them by asking for none
        sys.exit(f"mutate: no mutants of {module} yet; run it once whole, or `mutmut run` to make them")
    return sorted(random.Random(0).sample(names, min(sample, len(names))))


def survivors(module: str) -> list[str]:
    """The module's mutants that no test killed last time (survived, or reached by no test)."""
    return sorted(name for name, status in statuses().items()
                  if (match := NAME.match(name)) and match["module"] == module and status in ("survived", "no tests"))


def table(seconds: dict[str, float]) -> str:
    """The markdown table of the results mutmut holds, one row per module it has results for."""
    equivalent = tomllib.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}
    rows = {}
    for name, status in statuses().items():
        match = NAME.match(name)
        if not match:
            continue
        kind = "killed" if status in KILLED else ("equivalent" if name in equivalent else status)
        rows.setdefault(match["module"], Counter())["unchecked" if status in UNCHECKED else kind] += 1
    lines = ["| module | mutants | checked | killed | equivalent | survived | no tests | killed of non-equivalent "
             "| time | date |", "|---|---|---|---|---|---|---|---|---|---|"]
    today = date.today().isoformat()
    for module in modules():
        if module not in rows:
            continue
        count = rows[module]
        total = sum(count.values())
        checked = total - count["unchecked"]
        if not checked:
            continue
        live = checked - count["equivalent"]
        share = count["killed"] / live if live else 1.0
        took = f"{seconds[module]:.0f} s" if module in seconds else "-"
        lines.append(f"| {module.removeprefix('remixer.')} | {total} | {checked} | {count['killed']} "
                     f"| {count['equivalent']} "
                     f"| {count['survived']} | {count['no tests']} | {100 * share:.1f}%"
                     f"{'' if share >= GOAL else ' (under the goal)'} | {took} | {today} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", nargs="*", help="e.g. midi, mix, decoding.plan (default: every one)")
    parser.add_argument("--table", action="store_true", help="only print the table of the last runs")
    parser.add_argument("--again", action="store_true", help="run only the module's mutants that survived or had "
                        "no test last time (after adding tests)")
    parser.add_argument("--sample", type=int, default=0, help="run this many of each module's mutants, drawn at "
                        "random (seed 0); default: all")
    args = parser.parse_args(argv)
    chosen = [resolve(name) for name in args.module] or modules()
    seconds = {}
    if not args.table:
        for module in chosen:
            start = time.perf_counter()
            print(f"[mutate] {module}", flush=True)
            names = survivors(module) if args.again else chosen_mutants(module, args.sample)
            if names:
                subprocess.run([sys.executable, "-m", "mutmut", "run", *names], cwd=ROOT, check=True)
            seconds[module] = time.perf_counter() - start
    print(table(seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
