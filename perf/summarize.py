#!/usr/bin/env python3
"""Prints the perf/README.md results tables from perf/results/*.json (loadtest output).

    python3 perf/summarize.py [DIR]   # main table, then "cluster vs single node" tables

`perf/run.sh cluster` also calls it to add what the loadtest cannot see (CPU of every
server process, Redis's own counters) to a result file, under the key "cluster":

    python3 perf/summarize.py --annotate FILE --mode single|c1|c2 --wall SECONDS --clk HZ
        [--redis-info FILE] [--metrics ROLE=FILE ...] ROLE=TICKS ...
"""
import argparse
import glob
import json
import os
import re
import sys

# A run "keeps up" when it delivers at least this share of what was published in the
# window, with no errors or sequence gaps, and with a p99 below this bound (a backlog that
# grows during a 5 s run shows up as a p99 of hundreds of ms or seconds).
KEEP_UP_RATIO = 0.999
KEEP_UP_P99_US = 50_000
MODES = ("single", "c1", "c2")
MODE_NAMES = {
    "single": "single node",
    "c1": "cluster, 1 node + Redis",
    "c2": "cluster, 2 nodes (sub A, pub B)",
}


def fmt_us(v):
    if v is None:
        return "-"
    return "%.2f ms" % (v / 1000) if v >= 1000 else "%.0f us" % v


def fmt_pct(v):
    return "-" if v is None else "%.0f%%" % v


# ---------------------------------------------------------------- annotate (run.sh cluster)


def parse_redis_info(text):
    """INFO ALL as a dict; commandstats lines become {cmd: {calls, usec, usec_per_call}}."""
    out, cmds = {}, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            f = dict(kv.split("=", 1) for kv in v.split(",") if "=" in kv)
            cmds[k[len("cmdstat_"):]] = {
                "calls": int(f.get("calls", 0)),
                "usec": int(f.get("usec", 0)),
                "usec_per_call": float(f.get("usec_per_call", 0)),
            }
        else:
            out[k] = v
    keep = (
        "used_cpu_sys", "used_cpu_user", "used_cpu_sys_main_thread", "used_cpu_user_main_thread",
        "total_commands_processed", "instantaneous_ops_per_sec", "total_net_input_bytes",
        "total_net_output_bytes", "pubsub_channels", "used_memory", "used_memory_peak",
        "client_output_buffer_limit_disconnections", "client_query_buffer_limit_disconnections",
        "connected_clients",
    )
    r = {k: num(out[k]) for k in keep if k in out}
    r["commandstats"] = {
        c: s for c, s in cmds.items()
        if c in ("evalsha", "eval", "publish", "xadd", "hincrby", "hget", "expire", "hset",
                 "subscribe", "ssubscribe", "xrange", "zadd", "zrangebyscore")
    }
    return r


def num(v):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def parse_metrics(text):
    """The cluster lines of a /metrics page: {name: value}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(quotecast_(?:cluster|redis)_\w+)\s+(\S+)$", line)
        if m:
            out[m.group(1)] = num(m.group(2))
    return out


def window_cpu(a, r):
    """CPU of each sampled process over the loadtest's measured window (linear
    interpolation between samples), and core-0 µs per delivered event in it."""
    start = r.get("window_start_unix_ns", 0) / 1e9
    dur = r.get("measured_s", 0)
    if not (a.samples and os.path.exists(a.samples) and start and dur):
        return None
    lines = open(a.samples).read().splitlines()
    if not lines or not lines[0].startswith("#"):
        return None
    roles = lines[0][1:].split()
    pts = []
    for line in lines[1:]:
        f = line.split()
        if len(f) == len(roles) + 1:
            pts.append([float(x) for x in f])
    if len(pts) < 2 or pts[0][0] > start or pts[-1][0] < start + dur:
        return None

    def at(t, i):
        for p, q in zip(pts, pts[1:]):
            if p[0] <= t <= q[0]:
                return p[i] + (q[i] - p[i]) * (t - p[0]) / max(q[0] - p[0], 1e-9)
        return None

    cpu = {}
    for i, role in enumerate(roles, start=1):
        a0, a1 = at(start, i), at(start + dur, i)
        if a0 is not None and a1 is not None:
            cpu[role] = 100.0 * (a1 - a0) / a.clk / dur
    total = sum(cpu.values())
    # Events delivered in the window (each fans out to expected_total / published_events
    # subscribers on average); refused publishes cost little and deliver nothing.
    fan = r.get("expected_total", 0) / max(r.get("published_events", 0), 1)
    events = r.get("delivered_window", 0) / fan if fan else 0
    return {
        "seconds": dur,
        "cpu_pct": cpu,
        "cpu_total_pct": total,
        "delivered_events": events,
        "cpu_us_per_delivered_event": (total / 100.0 * dur / events * 1e6) if events else None,
    }


def annotate(argv):
    ap = argparse.ArgumentParser(prog="summarize.py --annotate")
    ap.add_argument("--annotate", required=True, metavar="FILE")
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--wall", type=float, required=True, help="seconds the loadtest ran")
    ap.add_argument("--clk", type=float, default=100.0, help="clock ticks per second")
    ap.add_argument("--redis-info", metavar="FILE")
    ap.add_argument("--metrics", action="append", default=[], metavar="ROLE=FILE")
    ap.add_argument("--samples", metavar="FILE",
                    help="'# ROLE ...' then lines 'UNIX_SECONDS TICKS ...' (one per role)")
    ap.add_argument("ticks", nargs="*", metavar="ROLE=TICKS")
    a = ap.parse_args(argv)
    r = json.load(open(a.annotate))
    cpu_s = {}
    for t in a.ticks:
        role, v = t.split("=", 1)
        cpu_s[role] = int(v) / a.clk
    total = sum(cpu_s.values())
    pubd = r.get("published_events", 0)
    c = {
        "mode": a.mode,
        "wall_s": round(a.wall, 3),
        "cpu_s": cpu_s,
        "cpu_pct": {k: 100.0 * v / a.wall for k, v in cpu_s.items()},
        "cpu_total_s": total,
        "cpu_total_pct": 100.0 * total / a.wall,
        "cpu_us_per_published_event": (total / pubd * 1e6) if pubd else None,
        "note": "CPU from /proc/PID/stat (utime+stime) over the whole loadtest run "
        "(connect, 1 s settle, warm-up, measurement, drain); all on core 0",
    }
    win = window_cpu(a, r)
    if win:
        c["window"] = win
    if a.redis_info and os.path.exists(a.redis_info):
        c["redis"] = parse_redis_info(open(a.redis_info).read())
    for m in a.metrics:
        role, path = m.split("=", 1)
        if os.path.exists(path):
            c.setdefault("metrics", {})[role] = parse_metrics(open(path).read())
    r["cluster"] = c
    with open(a.annotate, "w") as f:
        json.dump(r, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- tables


def main_table(runs):
    rows = []
    for name, r in runs:
        lat = r.get("latency_us", {})
        srv = r.get("server") or {}
        rss = srv.get("rss_per_conn_bytes")
        rows.append(
            "| {name} | {clients} | {exp:,.0f} | {got:,.0f} | {ratio:.4f} | {p50} | {p99} | {p999} | {cpu} | {rss} | {conn} |".format(
                name=name,
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


def problems(r):
    """Errors, closes and sequence trouble of a run, as one short string ("" if none)."""
    p = []
    n_err = sum((r.get("errors") or {}).values())
    if n_err:
        p.append("%d errors (%s)" % (n_err, ", ".join(sorted(r["errors"]))[:80]))
    n_close = sum((r.get("closes") or {}).values())
    if n_close:
        p.append("%d closes" % n_close)
    if r.get("gaps"):
        p.append("%d gaps (%d missing)" % (r["gaps"], r.get("missing", 0)))
    for k in ("duplicates", "out_of_order"):
        if r.get(k):
            p.append("%d %s" % (r[k], k.replace("_", " ")))
    m = ((r.get("cluster") or {}).get("metrics") or {})
    fills = sum(x.get("quotecast_cluster_gap_fills_total", 0) for x in m.values())
    resets = sum(x.get("quotecast_cluster_resets_total", 0) for x in m.values())
    fails = sum(x.get("quotecast_cluster_publish_failures_total", 0) for x in m.values())
    disc = sum(x.get("quotecast_redis_disconnects_total", 0) for x in m.values())
    for v, what in ((fills, "gap fills"), (resets, "resets"), (fails, "publish failures"),
                    (disc, "Redis disconnects")):
        if v:
            p.append("%d %s" % (v, what))
    return "; ".join(p)


def keeps_up(r):
    p99 = (r.get("latency_us") or {}).get("p99")
    return (
        r.get("delivery_ratio", 0) >= KEEP_UP_RATIO
        and not problems(r)
        and p99 is not None
        and p99 <= KEEP_UP_P99_US
    )


def cluster_tables(runs):
    # cluster-<scenario>-<mode>
    groups = {}
    for name, r in runs:
        m = re.match(r"^cluster-(.+)-(single|c1|c2)$", name)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = r
    if not groups:
        return

    def key(g):
        s = next(iter(groups[g].values())).get("settings", {})
        return (not g.startswith("pub"), s.get("batch", 0), s.get("rate", 0))

    print()
    print("| scenario | offered events/s | batch | mode | expected deliveries/s | delivered/s | ratio | vs single | p50 | p99 | p99.9 | CPU node A | CPU node B | CPU Redis | CPU total | core-0 µs/event | keeps up | problems |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for g in sorted(groups, key=key):
        single = groups[g].get("single")
        for mode in MODES:
            r = groups[g].get(mode)
            if r is None:
                continue
            s = r.get("settings", {})
            lat = r.get("latency_us", {})
            c = r.get("cluster") or {}
            w = c.get("window") or {}
            pct = w.get("cpu_pct") or {}
            vs = (
                "%.3f" % (r.get("delivered_per_s", 0) / single["delivered_per_s"])
                if single and single.get("delivered_per_s")
                else "-"
            )
            upe = w.get("cpu_us_per_delivered_event")
            print(
                "| {g} | {rate:,.0f} | {batch} | {mode} | {exp:,.0f} | {got:,.0f} | {ratio:.4f} | {vs} | {p50} | {p99} | {p999} | {a} | {b} | {red} | {tot} | {upe} | {ok} | {prob} |".format(
                    g=g,
                    rate=s.get("rate", 0),
                    batch=s.get("batch", 0),
                    mode=mode,
                    exp=r.get("expected_per_s", 0),
                    got=r.get("delivered_per_s", 0),
                    ratio=r.get("delivery_ratio", 0),
                    vs=vs,
                    p50=fmt_us(lat.get("p50")),
                    p99=fmt_us(lat.get("p99")),
                    p999=fmt_us(lat.get("p999")),
                    a=fmt_pct(pct.get("node_a")),
                    b=fmt_pct(pct.get("node_b")),
                    red=fmt_pct(pct.get("redis")),
                    tot=fmt_pct(w.get("cpu_total_pct")),
                    upe="%.1f" % upe if upe is not None else "-",
                    ok="yes" if keeps_up(r) else "**no**",
                    prob=problems(r) or "-",
                )
            )

    # Sustained ceiling per publish batch size: the highest offered rate that kept up.
    fam = {}
    for g, by_mode in groups.items():
        m = re.match(r"^pub-\d+k-b(\d+)$", g)
        if not m:
            continue
        for mode, r in by_mode.items():
            fam.setdefault(int(m.group(1)), {}).setdefault(mode, []).append(r)
    if not fam:
        return
    print()
    print("Publish-bound ceiling (highest offered rate that kept up: ratio >= %.3f, no errors "
          "or gaps, p99 <= %d ms; \">=\" when the highest rate tried kept up):"
          % (KEEP_UP_RATIO, KEEP_UP_P99_US // 1000))
    print()
    print("| batch | single node | cluster, 1 node | cluster, 2 nodes | single / 1 node | single / 2 nodes |")
    print("|---|---|---|---|---|---|")
    for b in sorted(fam):
        ceil = {}
        for mode in MODES:
            rs = sorted(fam[b].get(mode, []), key=lambda r: r["settings"]["rate"])
            ok = [r["settings"]["rate"] for r in rs if keeps_up(r)]
            # The ceiling is below the first rate that failed.
            first_fail = next((r["settings"]["rate"] for r in rs if not keeps_up(r)), None)
            best = max((x for x in ok if first_fail is None or x < first_fail), default=0)
            ceil[mode] = (best, first_fail is None and bool(rs))

        def show(mode):
            if not fam[b].get(mode):
                return "-"
            v, open_ = ceil[mode]
            return ("≥ " if open_ else "") + ("%s/s" % "{:,.0f}".format(v) if v else "< lowest")

        def ratio(mode):
            (s, s_open), (c, c_open) = ceil["single"], ceil[mode]
            if not s or not c or c_open:
                return "- (cluster kept up at every rate tried)" if c_open else "-"
            return ("≥ " if s_open else "") + "%.1f×" % (s / c)

        print("| %d | %s | %s | %s | %s | %s |" % (b, show("single"), show("c1"), show("c2"),
                                                  ratio("c1"), ratio("c2")))


def main():
    if "--annotate" in sys.argv[1:]:
        annotate(sys.argv[1:])
        return
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
    runs = []
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        r = json.load(open(path))
        runs.append((r.get("name", os.path.basename(path)), r))
    main_table([(n, r) for n, r in runs if not n.startswith("cluster-")])
    cluster_tables(runs)


if __name__ == "__main__":
    main()
