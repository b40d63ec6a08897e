#!/usr/bin/env python3
"""Medians of loadgen --json summaries (one JSON object a line), by scenario and backend."""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(list)
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                key = (r["scenario"], r["backend"], r["figures"].get("orders"))
                runs[key].append(r)

for (scenario, backend, orders), rs in sorted(runs.items(), key=lambda kv: str(kv[0])):
    label = f"{scenario} / {backend}" + (f" / {orders:.0f} orders" if orders else "")
    print(f"## {label}: {len(rs)} run(s), violations: {sum(len(r['violations']) for r in rs)}")
    names = list(rs[0]["figures"].keys())
    units = rs[0].get("units", {})
    for name in names:
        values = [r["figures"][name] for r in rs if name in r["figures"]]
        med = statistics.median(values)
        print(f"  {name:<40} {med:>14.3f} {units.get(name, ''):<14} runs: "
              + ", ".join(f"{v:.1f}" for v in values))
