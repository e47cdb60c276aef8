#!/usr/bin/env python3
"""Regenerates vultrino-core/src/public_suffixes.txt, the Public Suffix List as the core reads it
(vultrino-core/src/public_suffix.rs; decision 0099).

Source: the list as shipped in the `psl` crate that Cargo.lock pins (its data/rules.txt, found
with `cargo metadata`; the crate stays a dev-dependency of vultrino-core, whose tests compare the
two). No network beyond what cargo itself may need to fetch that crate.

Output: one rule a line, exactly as the list writes it (`co.uk`, `*.ck`, `!www.ck`), ICANN and
private sections both, comments dropped, names outside ASCII in their `xn--` form (IDNA, as
hosts reach the core), sorted bytewise with no duplicate — the order the core's binary search
needs (a test checks it).

Usage: scripts/public-suffixes.py            (after bumping `psl` in Cargo.lock)
"""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "vultrino-core" / "src" / "public_suffixes.txt"


def psl_rules_file():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    found = [p for p in meta["packages"] if p["name"] == "psl"]
    if len(found) != 1:
        sys.exit(f"error: expected one `psl` package in Cargo.lock, found {len(found)}")
    return found[0]["version"], pathlib.Path(found[0]["manifest_path"]).parent / "data" / "rules.txt"


def ascii_rule(rule):
    prefix = next((p for p in ("!", "*.") if rule.startswith(p)), "")
    name = rule[len(prefix):]
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return (prefix + name).lower()


def main():
    version, source = psl_rules_file()
    rules = set()
    for line in source.read_text(encoding="utf-8").splitlines():
        # The list's own format: a rule is the first word of a line; `//` starts a comment.
        words = line.split()
        if not words or words[0].startswith("//"):
            continue
        rules.add(ascii_rule(words[0]))
    data = sorted(r.encode("ascii") for r in rules)
    OUT.write_bytes(b"".join(r + b"\n" for r in data))
    print(f"{OUT.relative_to(ROOT)}: {len(data)} rules from psl {version} ({source})")


if __name__ == "__main__":
    main()
