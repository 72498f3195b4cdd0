#!/usr/bin/env python3
"""report.py RESULTS.tsv -- the table of scripts/bench.sh.

RESULTS.tsv lines: kind workload system run value daemon_cpu_s
(kind: time = seconds, mem = MB, info = a count). Prints medians per
workload and system, the ratios strata/fuse-overlayfs and strata/kernel with
the targets of issue 4, the daemons' CPU time, and one machine-readable line
per workload: `workload strata_s fuse_overlayfs_s kernel_s` (NA where a
system does not apply).
"""
import collections
import statistics
import sys

ORDER = [
    "mount_debian", "mount_ready_debian", "mount_busybox",
    "walk_find_cold", "walk_find_warm", "walk_find_warm2",
    "walk_stat_cold", "walk_stat_warm", "walk_stat_warm2",
    "walk_many_stat_cold", "walk_many_stat_warm",
    "seq_read_cold", "seq_read_warm", "rand4k_cold", "rand4k_warm",
    "cat_usr_cold", "cat_usr_warm", "cat_usr_warm2",
    "copyup_append_1000", "copyup_open_1g",
    "untar", "untar_sync", "rm_rf", "go_build",
]
SYSTEMS = ["strata", "fuse-overlayfs", "kernel", "plain"]
FO_1_5 = 1 / 1.5
# workload: (max strata/fuse-overlayfs, max strata/kernel); every workload
# also has to beat fuse-overlayfs (ratio < 1).
TARGETS = {
    "walk_find_cold": (FO_1_5, 2.0), "walk_stat_cold": (FO_1_5, 2.0),
    "walk_find_warm": (1.0, 1.1), "walk_stat_warm": (1.0, 1.1),
    "walk_find_warm2": (1.0, 1.1), "walk_stat_warm2": (1.0, 1.1),
    "seq_read_cold": (1.0, 1.2), "seq_read_warm": (FO_1_5, 1.2),
    "cat_usr_cold": (FO_1_5, None), "cat_usr_warm": (FO_1_5, None),
    "cat_usr_warm2": (FO_1_5, None),
    "untar": (1.0, 3.0), "rm_rf": (1.0, 3.0),
}


def fmt(v, unit=""):
    if v is None:
        return "-"
    if v >= 100:
        return "%.0f%s" % (v, unit)
    if v >= 1:
        return "%.2f%s" % (v, unit)
    return "%.3f%s" % (v, unit)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    vals = collections.defaultdict(list)
    cpu = collections.defaultdict(list)
    for line in open(sys.argv[1]):
        f = line.rstrip("\n").split("\t")
        if len(f) < 5:
            continue
        kind, wl, sysname, _run, value = f[:5]
        vals[(kind, wl, sysname)].append(float(value))
        if kind == "time" and len(f) > 5 and f[5] != "":
            cpu[(wl, sysname)].append(float(f[5]))

    def med(kind, wl, s):
        v = vals.get((kind, wl, s))
        return statistics.median(v) if v else None

    def nruns(kind, wl):
        return max((len(vals.get((kind, wl, s), [])) for s in SYSTEMS), default=0)

    times = [w for w in ORDER if any((("time", w, s) in vals) for s in SYSTEMS)]
    times += sorted({w for (k, w, s) in vals if k == "time" and w not in ORDER and not w.startswith("ref_")})
    ref_cp = med("time", "ref_cp_reflink_auto_1g", "plain")
    ref_cp_sync = med("time", "ref_cp_reflink_auto_fsync_1g", "plain")

    print("Median seconds (n = runs). s/fo = strata/fuse-overlayfs, s/k = strata/kernel: below 1 means strata is faster.")
    print("plain = the same workload on a plain directory holding a copy of the merged tree (the floor);")
    print("for copyup_open_1g it is `cp --reflink=auto` of the file on the same disk.")
    hdr = "%-20s %3s %9s %9s %9s %9s %7s %7s  %s" % (
        "workload", "n", "strata", "fuse-ovl", "kernel", "plain", "s/fo", "s/k", "targets (issue 4)")
    print(hdr)
    print("-" * len(hdr))
    misses = []
    for w in times:
        s, fo, k, p = (med("time", w, x) for x in SYSTEMS)
        if w == "copyup_open_1g":
            p = ref_cp
        rfo, rk = ratio(s, fo), ratio(s, k)
        fo_max, k_max = TARGETS.get(w, (1.0, None))
        notes = []
        if rfo is not None:
            ok = rfo < fo_max if fo_max == 1.0 else rfo <= fo_max
            want = "faster than fo" if fo_max == 1.0 else "<=%.2f x fo" % fo_max
            notes.append(("ok " if ok else "MISS ") + want)
            if not ok:
                misses.append("%s: s/fo %.2f (want %s)" % (w, rfo, want))
        if k_max is not None and rk is not None:
            ok = rk <= k_max
            notes.append(("ok " if ok else "MISS ") + "<=%.1f x kernel" % k_max)
            if not ok:
                misses.append("%s: s/k %.2f (want <= %.1f)" % (w, rk, k_max))
        if w == "copyup_open_1g" and s is not None and ref_cp:
            r = s / ref_cp
            ok = r <= 1.3
            notes.append(("ok " if ok else "MISS ") + "<=1.3 x cp (%.2f)" % r)
            if not ok:
                misses.append("%s: %.2f x cp --reflink=auto (want <= 1.3)" % (w, r))
        if w == "mount_debian":
            bb = med("time", "mount_busybox", "strata")
            if s is not None and bb:
                notes.append("debian/busybox %.2f" % (s / bb))
        print("%-20s %3d %9s %9s %9s %9s %7s %7s  %s" % (
            w, nruns("time", w), fmt(s), fmt(fo), fmt(k), fmt(p), fmt(rfo), fmt(rk), "; ".join(notes)))
    if ref_cp is not None:
        print("%-20s %3d %9s %9s %9s %9s" % ("ref: cp 1g", nruns("time", "ref_cp_reflink_auto_1g"), "", "", "", fmt(ref_cp)))
    if ref_cp_sync is not None:
        print("%-20s %3d %9s %9s %9s %9s" % ("ref: cp+fsync 1g", nruns("time", "ref_cp_reflink_auto_fsync_1g"), "", "", "", fmt(ref_cp_sync)))

    print()
    print("Spread over runs (max/min) — how noisy each figure is:")
    print("%-20s %9s %9s %9s %9s" % ("workload", "strata", "fuse-ovl", "kernel", "plain"))
    for w in times:
        cells = []
        for x in SYSTEMS:
            v = vals.get(("time", w, x))
            cells.append("%.2f" % (max(v) / min(v)) if v and min(v) > 0 and len(v) > 1 else "-")
        print("%-20s %9s %9s %9s %9s" % tuple([w] + cells))

    mems = sorted({w for (k, w, s) in vals if k == "mem"})
    if mems:
        print()
        print("Daemon memory (MB, median): peak (VmHWM) and VmRSS after the image walk (image) and the 100k-file walk (many);")
        print("forgot = VmRSS 5 s after drop_caches made the kernel forget every inode.")
        for w in mems:
            s, fo = med("mem", w, "strata"), med("mem", w, "fuse-overlayfs")
            note = ""
            if w == "rss_after_many_MB" and s is not None:
                note = ("ok" if s < 100 else "MISS") + " < 100 MB after walking %s files" % (
                    fmt(med("info", "walk_many_files", "strata")))
                if s >= 100:
                    misses.append("rss_after_many_MB: %.1f" % s)
            print("%-26s strata %7s   fuse-overlayfs %7s   %s" % (w, fmt(s), fmt(fo), note))

    print()
    print("Daemon CPU seconds (utime+stime from /proc/PID/stat, median) per workload:")
    print("%-20s %9s %9s %9s" % ("workload", "strata", "fuse-ovl", "s/fo"))
    for w in times:
        s = statistics.median(cpu[(w, "strata")]) if cpu.get((w, "strata")) else None
        fo = statistics.median(cpu[(w, "fuse-overlayfs")]) if cpu.get((w, "fuse-overlayfs")) else None
        if s is None and fo is None:
            continue
        print("%-20s %9s %9s %9s" % (w, fmt(s), fmt(fo), fmt(ratio(s, fo))))

    ops = collections.defaultdict(dict)
    for (k, w, x), v in vals.items():
        if k == "ops":
            wl, op = w.split(":", 1)
            ops[wl][(op, x)] = statistics.median(v)
    if ops:
        print()
        print("FUSE requests sent to the daemon (fuse:fuse_request_send, median per workload):")
        print("%-20s %-14s %9s %9s %7s" % ("workload", "opcode", "strata", "fuse-ovl", "s/fo"))
        for w in [w for w in times if w in ops] + sorted(w for w in ops if w not in times):
            opnames = sorted({op for (op, _x) in ops[w]},
                             key=lambda op: -max(ops[w].get((op, "strata"), 0), ops[w].get((op, "fuse-overlayfs"), 0)))
            for op in opnames:
                s_, fo_ = ops[w].get((op, "strata")), ops[w].get((op, "fuse-overlayfs"))
                print("%-20s %-14s %9s %9s %7s" % (w, op, "%d" % s_ if s_ is not None else "-",
                                                   "%d" % fo_ if fo_ is not None else "-", fmt(ratio(s_, fo_))))

    counts = sorted({w for (k, w, s) in vals if k == "info"})
    if counts:
        print()
        print("Counts seen through each mount (sanity): " + "; ".join(
            "%s %s" % (w, " ".join("%s=%s" % (x, fmt(med("info", w, x))) for x in SYSTEMS if ("info", w, x) in vals))
            for w in counts))

    print()
    print("Targets missed: " + ("none" if not misses else ""))
    for m in misses:
        print("  " + m)

    print()
    print("# machine-readable: workload strata_s fuse_overlayfs_s kernel_s (medians; mem lines in MB)")
    for w in times:
        print(" ".join([w] + [("%.6f" % v) if v is not None else "NA"
                             for v in (med("time", w, x) for x in SYSTEMS[:3])]))
    for w in mems:
        print(" ".join([w] + [("%.1f" % v) if v is not None else "NA"
                             for v in (med("mem", w, x) for x in SYSTEMS[:3])]))
    print("# plain directory / reference: workload seconds")
    for w in times + ["ref_cp_reflink_auto_1g", "ref_cp_reflink_auto_fsync_1g"]:
        v = med("time", w, "plain")
        if v is not None:
            print("plain %s %.6f" % (w, v))


if __name__ == "__main__":
    main()
