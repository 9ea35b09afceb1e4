#!/usr/bin/env python3
"""Per-function costs of V8-compiled Wasm from callgrind, for
scripts/profile-callgrind.sh (BY_FUNCTION=1).

callgrind sees V8's generated code as bare addresses. V8's --log-code writes
where it put each function (`code-creation,...,ADDRESS,SIZE,NAME,...`), so the
instruction-level costs of `--dump-instr=yes` can be summed per function. Two
runs of different lengths are given; the difference per exchange is printed,
largest first, so what Node, V8's compiling and the policy's compile cost
cancels out. Functions are matched by name between runs (V8 places code
anywhere).

usage: callgrind_by_function.py COUNT SHORT.out SHORT.v8log LONG.out LONG.v8log [TOP]
"""
import bisect
import re
import os
import sys
from collections import Counter

EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
# Rust's legacy mangling: _ZN<len><ident>...17h<hash>E. Shown as a::b::c.
MANGLED = re.compile(r"(\d+)")


def demangle(name):
    if not name.startswith("_ZN"):
        return name
    rest, parts = name[3:], []
    while rest and rest[0].isdigit():
        m = MANGLED.match(rest)
        n = int(m.group(1))
        start = len(m.group(1))
        parts.append(rest[start : start + n])
        rest = rest[start + n :]
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    text = "::".join(parts)
    for code, ch in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$RF$", "&"),
                     ("$C$", ","), ("$u7b$", "{"), ("$u7d$", "}"), ("..", "::")):
        text = text.replace(code, ch)
    return text


def code_ranges(log):
    starts, ends, names = [], [], []
    entries = []
    with open(log, errors="replace") as f:
        for line in f:
            if not line.startswith("code-creation,"):
                continue
            fields = line.rstrip("\n").split(",")
            # code-creation,TYPE,KIND,TIME,ADDRESS,SIZE,NAME[,...]
            try:
                addr, size = int(fields[4], 16), int(fields[5])
            except (IndexError, ValueError):
                continue
            entries.append((addr, addr + size, fields[6] if len(fields) > 6 else "?"))
    entries.sort()
    for a, b, n in entries:
        starts.append(a)
        ends.append(b)
        names.append(n)
    return starts, ends, names


def costs_by_function(out, log):
    starts, ends, names = code_ranges(log)
    totals = {}
    skip_next = False
    with open(out, errors="replace") as f:
        for line in f:
            if line.startswith("calls="):
                # The next cost line is the call's inclusive cost: not self.
                skip_next = True
                continue
            if not line.startswith("0x"):
                continue
            if skip_next:
                skip_next = False
                continue
            fields = line.split()
            addr = int(fields[0], 16)
            i = bisect.bisect_right(starts, addr) - 1
            if i < 0 or addr >= ends[i]:
                continue
            name = names[i]
            costs = [int(x) for x in fields[2:]]
            acc = totals.setdefault(name, [0] * len(EVENTS))
            for k, c in enumerate(costs):
                acc[k] += c
    return totals


def main():
    count = int(sys.argv[1])
    short = costs_by_function(sys.argv[2], sys.argv[3])
    long = costs_by_function(sys.argv[4], sys.argv[5])
    top = int(sys.argv[6]) if len(sys.argv) > 6 else 40
    per = {}
    for name, acc in long.items():
        base = short.get(name, [0] * len(EVENTS))
        per[name] = [(a - b) / count for a, b in zip(acc, base)]
    ir = Counter({n: v[0] for n, v in per.items()})
    i1 = Counter({n: v[3] for n, v in per.items()})
    l2i = Counter({n: v[6] for n, v in per.items()})
    total = lambda c: sum(v for v in c.values() if v > 0)
    print(f"V8's compiled code, per exchange: {total(ir):,.0f} instructions, "
          f"{total(i1):,.0f} L1i misses, {total(l2i):,.0f} L2 misses on code "
          "(functions V8 logged; builtins and the runtime are outside)")
    print(f"{'L1i misses':>11} {'L2i misses':>11} {'instructions':>13}  function")
    # SORT=instructions ranks by what a warm loop runs (per-byte work shows
    # there); the default ranks by L1i misses, what a cold request touches.
    order = ir if os.environ.get("SORT") == "instructions" else i1
    for name, _ in order.most_common(top):
        print(f"{i1[name]:11,.1f} {l2i[name]:11,.1f} {ir[name]:13,.0f}  {demangle(name)[:100]}")


if __name__ == "__main__":
    main()
