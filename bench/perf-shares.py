"""Shares of a machine-wide profile, from `perf script` text (BENCHMARKS.md, Mixed load):

    perf record -a -g -F 199 -o perf.data -- sleep 15      # during the run
    perf script -i perf.data -F comm,tid,time,period,ip,sym,dso > perf.txt
    python3 bench/perf-shares.py perf.txt

prints the share of all samples (weighted by their period) by comm; for the PostgreSQL backends
and the engine's threads the part whose leaf is in the kernel, the inclusive share of a few
frames (planning, execution, foreign-key triggers, commit; syscalls) and the top leaf symbols.
Every percentage is of all samples on both CPUs unless a second column says "of this group"."""
import collections, re, sys

samples = []  # (comm, period, [(sym, dso)] leaf first)
cur = None
for line in open(sys.argv[1], errors="replace"):
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = None
        continue
    if line[0] not in "\t ":
        m = re.match(r"^(.*?)\s+(\d+)\s+([\d.]+):\s+(\d+)\s*$", line.rstrip("\n"))
        cur = (m.group(1).strip(), int(m.group(4)), []) if m else None
        continue
    if cur is not None:
        m = re.match(r"^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m:
            cur[2].append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2)))
if cur:
    samples.append(cur)
total = sum(p for _, p, _ in samples)
pct = lambda q: f"{100 * q / total:6.2f}%"

print(f"# {len(samples)} samples, {total / 1e9:.1f} CPU-seconds sampled (shares weighted by sample period)")
print("\n## By comm (share of all samples on both CPUs)")
by_comm = collections.Counter()
for c, p, _ in samples:
    by_comm[c] += p
for c, p in by_comm.most_common(8):
    print(f"  {pct(p)}  {c}")

def group(title, pred, frames):
    sub = [(p, f) for c, p, f in samples if pred(c)]
    st = sum(p for p, _ in sub) or 1
    kern = sum(p for p, f in sub if f and "kernel" in f[0][1])
    print(f"\n## {title}: {pct(st)} of all samples; leaf in the kernel {pct(kern)} ({100 * kern / st:.0f} % of it)")
    if frames:
        print("  inclusive (sample has the frame on its stack): of all samples, of this group")
        for n in frames:
            q = sum(p for p, f in sub if any(s == n for s, _ in f))
            print(f"  {pct(q)}  {100 * q / st:5.1f}%  {n}")
    leaf = collections.Counter()
    for p, f in sub:
        if f:
            leaf[f[0][0]] += p
    print("  top leaf symbols (of all samples):")
    for s, p in leaf.most_common(12):
        print(f"  {pct(p)}  {s[:110]}")

group("PostgreSQL backends (comm postgres)", lambda c: c == "postgres",
      ["GetCachedPlan", "standard_planner", "pg_parse_query", "parse_analyze_varparams",
       "standard_ExecutorRun", "AfterTriggerEndQuery", "CommitTransactionCommand", "XLogFlush", "pq_getbyte",
       "secure_read", "secure_write", "entry_SYSCALL_64_after_hwframe"])
group("the engine (comms tokio-rt-worker, actix-rt|system, order-engine)",
      lambda c: c in ("tokio-rt-worker", "actix-rt|system", "order-engine"),
      ["entry_SYSCALL_64_after_hwframe", "__x64_sys_sendto", "__x64_sys_recvfrom", "__x64_sys_futex",
       "__x64_sys_poll", "__x64_sys_epoll_wait"])
group("loadgen", lambda c: c == "loadgen", [])
