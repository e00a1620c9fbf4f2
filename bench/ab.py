#!/usr/bin/env python3
"""A/B: the same load against two kvio server binaries, taking turns.

When a change is made for speed (or must not cost any), keep the old binary
aside and run both here, in one run, on the same noisy machine: each round
starts both servers fresh (server pinned to CPU 0, load to CPU 1, as
`kvio bench compare` does), loads each point on one then the other, and the
figures are medians over the rounds. What it prints is the ratio B/A of
server CPU per request (and requests/s), which is what compares servers on
2 cores.

    cp target/release/kvio /tmp/kvio-before      # before the change
    ...change, cargo build --release -p kvio...
    bench/ab.py --a /tmp/kvio-before --b target/release/kvio --flavor epoll

The load generator is the `kvio-bench` beside B (or --load BIN). Every loop is bounded:
each point runs --duration-ms after --warmup-ms, each server is stopped by
its PID with SIGTERM and waited for.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys


def start(binary, flavor, extra):
    cmd = ["taskset", "-c", "0", binary, "serve", "--flavor", flavor, "--addr", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    addr = next((f.split("=", 1)[1] for f in line.split() if f.startswith("addr=")), None)
    if addr is None:
        proc.kill()
        sys.exit(f"ab: {binary} printed no start-up line: {line!r}")
    return proc, addr


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(loader, addr, pid, conns, depth, args):
    # `kvio-bench ARGS`, or an older `kvio bench ARGS` that still had the lab built in.
    prefix = [loader] if os.path.basename(loader).startswith("kvio-bench") else [loader, "bench"]
    cmd = ["taskset", "-c", "1", *prefix, "--addr", addr, "-c", str(conns), "-p", str(depth),
           "--warmup-ms", str(args.warmup_ms), "--duration-ms", str(args.duration_ms),
           "--server-pid", str(pid), "--json", *args.load_args.split()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        sys.exit(f"ab: load failed ({out.returncode}): {out.stderr.strip()}")
    report = json.loads(out.stdout)
    if report["errors"]:
        sys.exit(f"ab: wrong answers from {addr}: {report['first_error']}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="baseline kvio binary")
    parser.add_argument("--b", required=True, help="kvio binary under test")
    parser.add_argument("--flavor", default="epoll")
    parser.add_argument("--a-flavor", help="A's flavor, if not --flavor")
    parser.add_argument("--serve-args", default="", help="extra `kvio serve` arguments for both")
    parser.add_argument("--b-serve-args", default="", help="extra `kvio serve` arguments for B only "
                        "(a flag A does not know, e.g. --metrics 127.0.0.1:0)")
    parser.add_argument("--load-args", default="", help="extra load generator arguments, e.g. \"--value-size 300000\"")
    parser.add_argument("--points", default="16x1,16x16", help="connections x pipeline, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-ms", type=int, default=300)
    parser.add_argument("--duration-ms", type=int, default=1500)
    parser.add_argument("--load", help="the load generator: a kvio-bench binary, or a kvio with `bench` "
                        "(default: the kvio-bench beside --b, else --b)")
    parser.add_argument("--json", help="also write every run's report here")
    args = parser.parse_args()
    beside = os.path.join(os.path.dirname(os.path.abspath(args.b)), "kvio-bench")
    loader = args.load or (beside if os.path.exists(beside) else args.b)
    extra = args.serve_args.split()
    points = [tuple(int(n) for n in p.split("x")) for p in args.points.split(",")]
    runs = {(side, point): [] for side in "ab" for point in points}
    for rnd in range(args.rounds):
        # Alternate which side goes first, so neither always gets the warmer machine.
        order = "ab" if rnd % 2 == 0 else "ba"
        for side in order:
            binary, flavor = (args.a, args.a_flavor or args.flavor) if side == "a" else (args.b, args.flavor)
            proc, addr = start(binary, flavor, extra + (args.b_serve_args.split() if side == "b" else []))
            try:
                for conns, depth in points:
                    runs[(side, (conns, depth))].append(load(loader, addr, proc.pid, conns, depth, args))
            finally:
                stop(proc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{side} {c}x{d}": r for (side, (c, d)), r in runs.items()}, f, indent=1)
    print(f"A = {args.a} ({args.a_flavor or args.flavor}), B = {args.b} ({args.flavor} {args.b_serve_args}), "
          f"{args.rounds} rounds, medians")
    # B/A cpu is the ratio of the medians; "rounds" is the spread of the
    # ratio within each round (A and B ran back to back there, so a round's
    # ratio cancels the machine's slower drifts): its lower quartile,
    # median and upper quartile, which say how far to trust the first column.
    print(f"{'point':>8} {'A cpu us/req':>13} {'B cpu us/req':>13} {'B/A cpu':>8} {'rounds: q1 med q3':>19} "
          f"{'A req/s':>10} {'B req/s':>10} {'B/A req/s':>9}")
    for conns, depth in points:
        cpu = {side: [r["server_cpu_us_per_request"] for r in runs[(side, (conns, depth))]] for side in "ab"}
        med = {side: (statistics.median(cpu[side]),
                      statistics.median(r["requests_per_sec"] for r in runs[(side, (conns, depth))]))
               for side in "ab"}
        (a_cpu, a_rps), (b_cpu, b_rps) = med["a"], med["b"]
        # A window with no CPU tick counted (10 ms resolution) has no ratio.
        paired = sorted(b / a for a, b in zip(cpu["a"], cpu["b"]) if a and b) or [float("nan")]
        q1, q2, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        print(f"{conns:>5}x{depth:<2} {a_cpu:>13.3f} {b_cpu:>13.3f} {b_cpu / a_cpu:>8.3f} "
              f"{q1:>6.3f} {q2:>5.3f} {q3:>6.3f} {a_rps:>10.0f} {b_rps:>10.0f} {b_rps / a_rps:>9.3f}")


if __name__ == "__main__":
    main()
