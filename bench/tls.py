#!/usr/bin/env python3
"""Server CPU per request, TLS against plaintext, kvio (RESP listener, epoll)
against Redis, with redis-benchmark as the load (SET and GET, -r 10000), in
one run: server pinned to CPU 0, load to CPU 1, the four configurations
taking turns each round; medians over the rounds (issue 29).

    N=200000 bench/tls.py target/release/kvio 3

Needs redis-server and redis-benchmark built with TLS (Debian's are),
openssl (a throw-away CA and certificate in a temporary directory) and
taskset. Server CPU is utime + stime from /proc (100 Hz ticks). Every run
is bounded (redis-benchmark -n N, a 600 s timeout); every server is
stopped by its PID."""
import os, subprocess, sys, time, tempfile, statistics, socket, json
KVIO = sys.argv[1]; ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
N = int(os.environ.get("N", "200000"))
d = tempfile.mkdtemp(prefix="sec-tlsbench-")
def sh(cmd): subprocess.run(cmd, shell=True, check=True, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
sh('openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=test CA" -keyout ca.key -out ca.crt')
sh('openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr')
sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext")
sh('openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt')
os.chmod(f"{d}/server.key", 0o600)
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def wait_port(port):
    for _ in range(200):
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit(f"nothing on {port}")
def start(server, tls):
    port = free_port()
    if server == "kvio":
        cmd = [KVIO, "serve", "--flavor", "epoll", "--addr", "127.0.0.1:0", "--resp", f"127.0.0.1:{port}", "--log-level", "warn"]
        if tls: cmd += ["--tls-cert", f"{d}/server.crt", "--tls-key", f"{d}/server.key"]
    else:
        cmd = ["redis-server", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--loglevel", "warning"]
        cmd += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", f"{d}/server.crt", "--tls-key-file", f"{d}/server.key",
                "--tls-ca-cert-file", f"{d}/ca.crt", "--tls-auth-clients", "no"] if tls else ["--port", str(port)]
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, port
def load(port, tls, conns, pipeline):
    cmd = ["taskset", "-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns), "-P", str(pipeline),
           "-n", str(N), "-t", "set,get", "-q", "-r", "10000"]
    if tls: cmd += ["--tls", "--cacert", f"{d}/ca.crt", "--sni", "localhost"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 or "requests per second" not in out.stdout: raise SystemExit(f"{cmd}: {out.stdout}{out.stderr}")
    return out.stdout
results = {}
points = [(16, 1), (16, 16)]
configs = [("kvio", False), ("kvio", True), ("redis", False), ("redis", True)]
for r in range(ROUNDS):
    for (conns, pipe) in points:
        for (server, tls) in configs:
            p, port = start(server, tls)
            try:
                c0, t0 = cpu(p.pid), time.time()
                load(port, tls, conns, pipe)
                c1, t1 = cpu(p.pid), time.time()
            finally:
                p.terminate(); p.wait(timeout=20)
            key = f"{server}{'+tls' if tls else ''} {conns}x{pipe}"
            results.setdefault(key, []).append(((c1 - c0) / (2 * N) * 1e6, 2 * N / (t1 - t0)))
            print(f"round {r} {key}: {results[key][-1][0]:.2f} us CPU/request, {results[key][-1][1]:.0f} req/s", flush=True)
print("\nmedians over", ROUNDS, "rounds (server CPU per request; requests/s)")
med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in results.items()}
for (conns, pipe) in points:
    pt = f"{conns}x{pipe}"
    for (server, tls) in configs:
        k = f"{server}{'+tls' if tls else ''} {pt}"; print(f"  {k:18} {med[k][0]:7.2f} us  {med[k][1]:9.0f} req/s")
    print(f"  kvio+tls / kvio      {pt}: {med['kvio+tls '+pt][0]/med['kvio '+pt][0]:.2f}x CPU")
    print(f"  kvio+tls / redis+tls {pt}: {med['kvio+tls '+pt][0]/med['redis+tls '+pt][0]:.2f}x CPU  (goal <= 0.8)")
subprocess.run(["rm", "-rf", d])
