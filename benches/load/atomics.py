#!/usr/bin/env python3
"""Atomic read-modify-writes executed per request, from a callgrind dump taken with
`--dump-instr=yes` (`ATOMICS=1 benches/load/callgrind.sh`).

Every x86-64 instruction with a `lock` prefix, and `xchg` with a memory operand (locked without
one), is found in the binary's disassembly (`objdump -d`); the dump gives how many times each
instruction address ran. An atomic read-modify-write on data that another core wrote last
moves its cache line between the cores (tens to hundreds of cycles that an instruction count
does not show); one on data only this core touches costs about as much as a few instructions.
The list by function tells which is which (reference counts of shared `Arc`s, shared locks and
counters against per-connection wakers and buffers).

    benches/load/atomics.py DUMP BINARY N [TOP]

Prints the total per request (the dump's counts over N), then the TOP (20) functions by atomic
read-modify-writes per request. Only the binary's own code (and what it links statically) is
counted, not libc's.
"""
import collections
import os
import re
import subprocess
import sys


def atomic_instructions(binary):
    """{address: function} of every locked instruction in `binary`."""
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", binary],
                         check=True, capture_output=True, text=True).stdout
    found, function = {}, None
    for line in out.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.*)>:", line)
        if m:
            function = m.group(2)
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
        if m and (m.group(2).startswith("lock ") or re.match(r"xchg\s+(%\w+,)?\(", m.group(2))):
            found[int(m.group(1), 16)] = function
    return found


def executed(dump, binary):
    """{address: times run} of the instructions of `binary` (self cost, calls left out)."""
    counts = collections.Counter()
    binary = os.path.realpath(binary)
    objects, obj, last, call_cost = {}, None, 0, False
    for line in open(dump):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?$", line)
            if m and m.group(2) is not None:
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                obj = objects.get(m.group(1)) if m else line[3:]
            continue
        if line.startswith("calls="):
            call_cost = True  # the next cost line is the call's inclusive cost
            continue
        first = line.split()[0]
        if "=" in first or re.match(r"^[a-z]+:", line):
            continue
        if first.startswith("0x"):
            addr = int(first, 16)
        elif first.startswith("+"):
            addr = last + int(first[1:])
        elif first.startswith("-"):
            addr = last - int(first[1:])
        elif first == "*":
            addr = last
        else:
            continue
        last = addr
        if call_cost:
            call_cost = False
            continue
        if obj and os.path.realpath(obj) == binary:
            counts[addr] += int(line.split()[-1])
    return counts


def main():
    dump, binary, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    atoms = atomic_instructions(binary)
    by_function = collections.Counter()
    for addr, count in executed(dump, binary).items():
        if addr in atoms:
            by_function[atoms[addr]] += count
    total = sum(by_function.values()) / n
    print(f"atomic read-modify-writes per request {total:.1f}")
    for function, count in by_function.most_common(top):
        print(f"  {count / n:6.2f}  {function[:160]}")


if __name__ == "__main__":
    main()
