#!/usr/bin/env python3
"""Prints the perf/README.md results table from perf/results/*.json (loadtest output)."""
import glob
import json
import os
import sys



def fmt_us(v):
    if v is None:
        return "-"
    return "%.2f ms" % (v / 1000) if v >= 1000 else "%.0f us" % v


d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
rows = []
for path in sorted(glob.glob(os.path.join(d, "*.json"))):
    r = json.load(open(path))
    s = r.get("settings", {})
    lat = r.get("latency_us", {})
    srv = r.get("server") or {}
    rss = srv.get("rss_per_conn_bytes")
    rows.append(
        "| {name} | {clients} | {exp:,.0f} | {got:,.0f} | {ratio:.4f} | {p50} | {p99} | {p999} | {cpu} | {rss} | {conn} |".format(
            name=r.get("name", os.path.basename(path)),
            clients=r.get("clients_acked", 0),
            exp=r.get("expected_per_s", 0),
            got=r.get("delivered_per_s", 0),
            ratio=r.get("delivery_ratio", 0),
            p50=fmt_us(lat.get("p50")),
            p99=fmt_us(lat.get("p99")),
            p999=fmt_us(lat.get("p999")),
            cpu="%.0f%%" % srv["cpu_pct_avg"] if "cpu_pct_avg" in srv else "-",
            rss="%.1f KiB" % (rss / 1024) if rss else "-",
            conn="%.2f s" % r["all_acked_s"] if r.get("all_acked_s") else "-",
        )
    )
print("| run | clients | expected/s | delivered/s | ratio | p50 | p99 | p99.9 | server CPU | RSS/conn | all acked |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
