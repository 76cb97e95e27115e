#!/usr/bin/env python3
"""Table of perf/pusher.sh's results: perf/results/pusher-*.json, one row per run, with
deliveries per server CPU-second ("per core": delivered/s divided by the server's average
share of its one pinned core), and the ratios to qc-v1 of the same scenario.

    python3 perf/pusher_table.py [DIR]
"""
import glob
import json
import os
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "perf/results"
rows = {}
for f in sorted(glob.glob(os.path.join(d, "pusher-*.json"))):
    r = json.load(open(f))
    name = r["name"][len("pusher-"):]
    for server in ("qc-pusher-http", "qc-pusher", "qc-v1", "sockudo"):
        if name.endswith("-" + server):
            scen = name[: -len(server) - 1]
            break
    else:
        continue
    srv = r.get("server") or {}
    cpu = srv.get("cpu_pct_avg") or 0
    dps = r["delivered_per_s"]
    rows[(scen, server)] = dict(
        exp=r["expected_per_s"],
        dps=dps,
        ratio=r["delivery_ratio"],
        p50=r["latency_us"]["p50"],
        p99=r["latency_us"]["p99"],
        cpu=cpu,
        per_core=dps / (cpu / 100) if cpu > 0 and dps > 0 else None,
        rss=srv.get("rss_per_conn_bytes"),
        errors=sum(r["errors"].values()) if isinstance(r["errors"], dict) else len(r["errors"]),
    )


def ms(us):
    return "%.2f ms" % (us / 1000) if us >= 1000 else "%d us" % us


print("| scenario | server | expected/s | delivered/s | ratio | p50 | p99 | server CPU | deliveries/s per core | vs qc-v1 per core | RSS/conn |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (scen, server), v in sorted(rows.items()):
    base = rows.get((scen, "qc-v1"), {}).get("per_core")
    rel = "%.2f" % (v["per_core"] / base) if base and v["per_core"] else "-"
    pc = "{:,.0f}".format(v["per_core"]) if v["per_core"] else "-"
    rss = "%.1f KiB" % (v["rss"] / 1024) if v["rss"] else "-"
    print(
        f"| {scen} | {server} | {v['exp']:,.0f} | {v['dps']:,.0f} | {v['ratio']:.4f} | {ms(v['p50'])} | {ms(v['p99'])} "
        f"| {v['cpu']:.0f}% | {pc} | {rel} | {rss} |"
    )
