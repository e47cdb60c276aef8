#!/usr/bin/env python3
"""Soak driver: mixed traffic against one `vultrino serve` (file store) for DURATION seconds.

Started by benches/soak/run.sh (which builds the binaries, starts the server and the upstreams
and cleans up); not meant to be run alone. Everything talks to 127.0.0.1 only.

    soak.py                     (settings from the environment, see run.sh)

1. A closed-loop calibration (CALIBRATE seconds, WORKERS processes, each as fast as it can) of
   the traffic mix measures the maximum rate; the soak then paces the same mix at RATE_FRACTION
   (default 0.5) of it.
2. The mix, per worker process, each its own keep-alive connection: executes through each
   credential type (api_key, basic_auth, query_param, oauth2), /proxy/ requests, MCP
   `tools/call http_request` over HTTP, and admin changes (credential create/update/delete, role
   create, key create/delete) through an admin session, each acknowledged (2xx) change logged.
   Beside them, one thread logs in and out of the admin UI every LOGIN_EVERY seconds (under the
   login throttle) and one sends an execute to a faulty upstream (resets, truncated bodies,
   stalls past the fetch timeout) every FAULT_EVERY seconds: those replies are the *injected*
   faults, and the only 5xx allowed.
3. Every INTERVAL seconds: throughput, p50/p99 latency, the server's RSS, open fds and threads
   (/proc), the data directory's size and the audit event count (GET /v1/audit, paged).
4. At the end: every acknowledged change is read back (live, then again after a restart of the
   server on the same data directory) and each one not found as acknowledged counts as missing.
"""
import http.client
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

ENV = os.environ
V_HOST, V_PORT = ENV["V_ADDR"].split(":")
V_PORT = int(V_PORT)
UP = ENV["UP"]  # fast upstream, http://127.0.0.1:PORT
FAULT = ENV["FAULT"]  # faulty upstream
VPID = int(ENV["VPID"])
DATA_DIR = ENV["DATA_DIR"]
DURATION = int(ENV.get("DURATION", "1800"))
INTERVAL = int(ENV.get("INTERVAL", "300"))
WARMUP = int(ENV.get("WARMUP", str(INTERVAL)))
CALIBRATE = int(ENV.get("CALIBRATE", "20"))
WORKERS = int(ENV.get("WORKERS", "4"))
FRACTION = float(ENV.get("RATE_FRACTION", "0.5"))
LOGIN_EVERY = float(ENV.get("LOGIN_EVERY", "20"))
FAULT_EVERY = float(ENV.get("FAULT_EVERY", "1"))
RSS_EVERY = float(ENV.get("RSS_EVERY", "10"))
PW = ENV["ADMIN_PW"]
SEED = int(ENV.get("SEED", "17"))
CAP = 20  # live records of each kind (credentials, roles, keys) per worker

# name, weight (per 1000 operations of a worker)
MIX = [
    ("exec_api_key", 250),
    ("exec_basic_auth", 150),
    ("exec_query_param", 150),
    ("exec_oauth2", 150),
    ("proxy", 100),
    ("mcp", 150),
    ("admin", int(ENV.get("ADMIN_WEIGHT", "50"))),
]


class Conn:
    """One keep-alive connection to the server, reopened after a connection error."""

    def __init__(self, timeout=30):
        self.timeout = timeout
        self.c = None

    def req(self, method, path, body=None, headers=None):
        h = {"content-type": "application/json"} if body is not None else {}
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(V_HOST, V_PORT, timeout=self.timeout)
            try:
                self.c.request(method, path, body=data, headers=h)
                r = self.c.getresponse()
                raw = r.read()
                return r.status, raw
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError):
                self.c.close()
                self.c = None
                if attempt == 1 or method not in ("GET",):
                    return 0, b""
        return 0, b""


def login(conn):
    st, raw = conn.req("POST", "/login", {"username": "admin", "password": PW})
    if st != 200:
        raise SystemExit(f"login failed: {st} {raw[:200]!r}")
    return json.loads(raw)["token"]


def pct(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(p / 100 * len(sorted_ms)))]


class Worker:
    def __init__(self, idx, setup, admin_token, tag):
        self.idx = idx
        self.tag = tag  # the phase (c: calibration, s: soak), so the names never collide
        self.setup = setup
        self.auth = {"authorization": f"Bearer {setup['key']}"}
        self.admin = {"authorization": f"Bearer {admin_token}"}
        self.conn = Conn()
        self.rng = random.Random(SEED * 1000 + idx)
        self.n = 0
        self.creds = {}  # alias -> description (live, acknowledged)
        self.keys = {}  # id -> name (live, acknowledged)
        self.roles = set()
        self.key_role = {}  # key id -> its role (a role in use is not deleted)
        self.acked = []  # (kind, name, expected) in order: expected None = deleted
        self.unsure = set()  # names whose last change got no reply (5xx/connection): not checked
        self.ops = [name for name, w in MIX for _ in range(w)]

    def execute(self, cred, path="/user"):
        return self.conn.req(
            "POST", "/v1/execute",
            {"credential": cred, "method": "GET", "url": f"{UP}{path}"}, self.auth)

    def one(self):
        op = self.rng.choice(self.ops)
        if op.startswith("exec_"):
            st, _ = self.execute("soak-" + op[5:].replace("_", "-"))
        elif op == "proxy":
            st, _ = self.conn.req("GET", "/proxy/soak-api-key/user", None, self.auth)
        elif op == "mcp":
            self.n += 1
            body = {"jsonrpc": "2.0", "id": self.n, "method": "tools/call", "params": {
                "name": "http_request",
                "arguments": {"credential": "soak-basic-auth", "method": "GET", "url": f"{UP}/user"}}}
            st, raw = self.conn.req("POST", "/mcp", body,
                                    {**self.auth, "mcp-protocol-version": "2025-06-18"})
            if st == 200 and b'"isError":true' in raw:
                st = 599  # a tool error is a failure of the call: counted with the 5xx
        else:
            st = self.admin_change()
        return op, st

    def admin_change(self):
        """One admin change; each worker keeps at most CAP live records of each kind, so that
        the store (and the server's index of it) stays the same size over the soak."""
        self.n += 1
        r = self.rng.random()
        i, n, h = self.idx, self.n, self.admin
        free_roles = sorted(self.roles - set(self.key_role.values()))
        if r >= 0.8 and not self.roles:
            r = 0.7  # a key needs a role of this worker: create one first
        if r < 0.65:
            if r < 0.3 and len(self.creds) < CAP or not self.creds:
                alias = f"soak-{self.tag}w{i}-c{n}"
                desc = f"created {n}"
                st, _ = self.conn.req("POST", "/v1/credentials", {
                    "alias": alias, "type": "api_key", "description": desc,
                    "data": {"key": f"soak-secret-{i}-{n}-0123456789"}, "base_url": UP,
                    "policy": {"allowed_hosts": ["127.0.0.1"]}}, h)
                self.note("cred", alias, desc, st)
            elif 0.3 <= r < 0.55:
                alias = self.rng.choice(sorted(self.creds))
                desc = f"updated {n}"
                st, _ = self.conn.req("PUT", f"/v1/credentials/{alias}", {"description": desc}, h)
                self.note("cred", alias, desc, st)
            else:
                alias = self.rng.choice(sorted(self.creds))
                st, _ = self.conn.req("DELETE", f"/v1/credentials/{alias}", None, h)
                self.note("cred", alias, None, st)
        elif r < 0.8:
            if (r < 0.75 and len(self.roles) < CAP) or not free_roles:
                role = f"soak-{self.tag}w{i}-r{n}"
                st, _ = self.conn.req("POST", "/v1/roles", {
                    "name": role, "permissions": ["read", "execute"], "scopes": ["soak-*"]}, h)
                self.note("role", role, True, st)
            else:
                role = self.rng.choice(free_roles)
                st, _ = self.conn.req("DELETE", f"/v1/roles/{role}", None, h)
                self.note("role", role, None, st)
        elif (r < 0.92 and len(self.keys) < CAP) or not self.keys:
            role = self.rng.choice(sorted(self.roles))
            name = f"soak-{self.tag}w{i}-k{n}"
            st, raw = self.conn.req("POST", "/v1/keys", {"name": name, "role": role}, h)
            if 200 <= st < 300:
                kid = json.loads(raw)["id"]
                self.key_role[kid] = role
                self.note("key", kid, name, st)
            elif st == 0 or st >= 500:
                self.unsure.add(name)
                self.unsure.add(role)  # a key may hold it: the role is not deleted any more
                self.key_role[name] = role
        else:
            kid = self.rng.choice(sorted(self.keys))
            st, _ = self.conn.req("DELETE", f"/v1/keys/{kid}", None, h)
            self.note("key", kid, None, st)
            if 200 <= st < 300:
                self.key_role.pop(kid, None)
        return st

    def note(self, kind, name, expected, st):
        if 200 <= st < 300:
            self.acked.append((kind, name, expected))
            self.unsure.discard(name)
            live = {"cred": self.creds, "key": self.keys}.get(kind)
            if kind == "role":
                if expected is None:
                    self.roles.discard(name)
                else:
                    self.roles.add(name)
            elif expected is None:
                live.pop(name, None)
            else:
                live[name] = expected
        elif st == 0 or st >= 500:
            self.unsure.add(name)  # may or may not have been applied: not checked


def worker_main(idx, setup, admin_token, phase_q, out_q, start_at, end_at, rate):
    """rate None: closed loop (calibration); else operations per second for this worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    w = Worker(idx, setup, admin_token, "s" if rate else "c")
    while time.time() < start_at:
        time.sleep(0.005)
    bucket_start = start_at
    lat, codes = [], {}
    nxt = time.time()
    period = 1.0 / rate if rate else 0.0
    while True:
        now = time.time()
        if now >= end_at:
            break
        if rate:
            if now < nxt:
                time.sleep(nxt - now)
            nxt += period
            if time.time() - nxt > 1.0:  # fell more than a second behind: do not burst
                nxt = time.time()
        t0 = time.perf_counter()
        op, st = w.one()
        dt = (time.perf_counter() - t0) * 1000
        lat.append(dt)
        key = f"{op}:{st}"
        codes[key] = codes.get(key, 0) + 1
        if rate and time.time() - bucket_start >= INTERVAL:
            out_q.put(("interval", idx, lat, codes))
            lat, codes = [], {}
            bucket_start += INTERVAL
    out_q.put(("interval", idx, lat, codes))
    out_q.put(("done", idx, w.acked, sorted(w.unsure)))


def proc_stats(pid):
    """RSS (KiB), open fds and threads of the server. The fds are the least of 10 samples over
    half a second: connections to a stalled upstream come and go (one per injected stall, for
    the fetch timeout), and the least count is the one a leak would raise."""
    fds = []
    for _ in range(10):
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.05)
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.strip()
    if os.environ.get("SOAK_ANON"):
        # AnonHugePages: anonymous memory backed by transparent huge pages (2 MiB each), which
        # a partly used region keeps whole (decision 0122)
        huge = 0
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    huge = int(line.split()[1])
        print(f"    (RssAnon {int(st['RssAnon'].split()[0]) / 1024:.1f} MiB, RssFile "
              f"{int(st['RssFile'].split()[0]) / 1024:.1f} MiB, AnonHugePages "
              f"{huge / 1024:.1f} MiB)", flush=True)
    return int(st["VmRSS"].split()[0]), min(fds), int(st["Threads"])


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_kinds(pid):
    """The server's open fds by kind: regular files and directories (the store's), sockets
    (listeners, clients' connections, pooled upstream connections) and the rest (pipes, eventfds,
    epoll, /dev files)."""
    files = sockets = other = 0
    d = f"/proc/{pid}/fd"
    for n in os.listdir(d):
        try:
            t = os.readlink(f"{d}/{n}")
        except OSError:
            continue  # closed between the listing and the read
        if t.startswith("socket:"):
            sockets += 1
        elif t.startswith("/") and not t.startswith("/dev/"):
            files += 1
        else:
            other += 1
    return files, sockets, other


def rss_sampler(stop, samples):
    """The server's RSS and open fds every RSS_EVERY seconds: RSS swings by several MiB within a
    minute (the audit history's evictions and segment collection), and the socket count with the
    connections open at that instant, so each report also gives the median of its interval's
    samples, and the drift is judged on those medians. The samples are taken while the traffic
    runs; the report of the last interval is printed after the load generators have closed their
    connections, so its instant count alone would read low (decision 0127)."""
    while not stop.wait(RSS_EVERY):
        try:
            samples.append((time.time(), vm_rss(VPID), fd_kinds(VPID)))
        except OSError:
            return


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def audit_count(conn, admin):
    n, cursor = 0, None
    while True:
        q = "/v1/audit?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        st, raw = conn.req("GET", q, None, admin)
        if st != 200:
            return f"error {st}"
        page = json.loads(raw)
        n += len(page["events"])
        cursor = page["cursor"]
        if not cursor:
            return n


def side_threads(stop, counters, admin_token):
    """The login/logout loop and the fault injector, in the main process."""

    def logins():
        c = Conn()
        while not stop.wait(LOGIN_EVERY):
            st, raw = c.req("POST", "/login", {"username": "admin", "password": PW})
            counters[f"login:{st}"] = counters.get(f"login:{st}", 0) + 1
            if st == 200:
                tok = json.loads(raw)["token"]
                st2, _ = c.req("GET", "/v1/credentials", None, {"authorization": f"Bearer {tok}"})
                counters[f"session_use:{st2}"] = counters.get(f"session_use:{st2}", 0) + 1
                st3, _ = c.req("POST", "/logout", None, {"authorization": f"Bearer {tok}"})
                counters[f"logout:{st3}"] = counters.get(f"logout:{st3}", 0) + 1

    def faults(key):
        c = Conn()
        auth = {"authorization": f"Bearer {key}"}
        kinds = ["reset", "truncate", "stall", "reset_body"]
        rng = random.Random(SEED)
        while not stop.wait(FAULT_EVERY):
            kind = rng.choice(kinds)
            st, _ = c.req("POST", "/v1/execute",
                          {"credential": "soak-fault", "method": "GET", "url": f"{FAULT}/{kind}"}, auth)
            counters[f"fault_{kind}:{st}"] = counters.get(f"fault_{kind}:{st}", 0) + 1

    ts = [threading.Thread(target=logins, daemon=True),
          threading.Thread(target=faults, args=(counters["_key"],), daemon=True)]
    for t in ts:
        t.start()
    return ts


def run_phase(setup, admin_token, seconds, rate_per_worker, report):
    ctx = mp.get_context("fork")
    out_q = ctx.Queue()
    start_at = time.time() + 0.5
    end_at = start_at + seconds
    procs = [ctx.Process(target=worker_main,
                         args=(i, setup, admin_token, None, out_q, start_at, end_at, rate_per_worker))
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    return procs, out_q, start_at, end_at


def main():
    conn = Conn()
    admin_token = login(conn)
    admin = {"authorization": f"Bearer {admin_token}"}
    setup = {"key": ENV["AGENT_KEY"]}
    out = sys.stdout
    p = lambda *a: (print(*a, file=out), out.flush())  # noqa: E731

    # 1. Calibration: closed loop, the same mix.
    procs, q, t0, t1 = run_phase(setup, admin_token, CALIBRATE, None, None)
    lat, codes, acked_cal, unsure_cal = [], {}, [], []
    done = 0
    while done < WORKERS:
        m = q.get()
        if m[0] == "interval":
            lat += m[2]
            for k, v in m[3].items():
                codes[k] = codes.get(k, 0) + v
        else:
            acked_cal += m[2]
            unsure_cal += m[3]
            done += 1
    for pr in procs:
        pr.join()
    max_rate = len(lat) / CALIBRATE
    lat.sort()
    target = max_rate * FRACTION
    p(f"calibration: {CALIBRATE}s closed loop, {WORKERS} workers: {max_rate:.0f} ops/s, "
      f"p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms -> soak at {FRACTION:.0%}: {target:.0f} ops/s")
    bad_cal = {k: v for k, v in codes.items() if not k.split(":")[1].startswith("2")}
    if bad_cal:
        p(f"calibration non-2xx: {bad_cal}")

    # 2. The soak.
    time.sleep(2)
    rss0, fds0, thr0 = proc_stats(VPID)  # idle, after the calibration
    du0, audit0 = du(DATA_DIR), audit_count(conn, admin)
    counters = {"_key": ENV["AGENT_KEY"]}
    stop = threading.Event()
    ts = side_threads(stop, counters, admin_token)
    procs, q, t0, t1 = run_phase(setup, admin_token, DURATION, target / WORKERS, None)
    samples = []
    ts.append(threading.Thread(target=rss_sampler, args=(stop, samples), daemon=True))
    ts[-1].start()
    p(f"soak: {DURATION}s at {target:.0f} ops/s target, report every {INTERVAL}s; "
      f"mix per 1000 ops: {dict(MIX)}; plus a login+use+logout every {LOGIN_EVERY}s and a "
      f"faulty-upstream execute every {FAULT_EVERY}s")
    p(f"{'t(min)':>6} {'ops/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'med':>6} {'fds':>5} {'thr':>4} "
      f"{'store MiB':>9} {'audit':>7} {'5xx':>4} {'4xx':>4} {'conn err':>8}")
    p(f"{0:>6.1f} {'-':>7} {'-':>7} {'-':>7} {rss0 / 1024:>8.1f} {'-':>6} {fds0:>5} {thr0:>4} "
      f"{du0 / 2**20:>9.2f} {audit0:>7}   (idle, before the soak)")
    buckets = {}
    rows = []
    all_codes = {}
    acked, unsure = list(acked_cal), list(unsure_cal)
    done = 0
    n_int = max(1, -(-DURATION // INTERVAL))
    reported = 0
    while done < WORKERS:
        m = q.get()
        if m[0] == "done":
            acked += m[2]
            unsure += m[3]
            done += 1
            continue
        _, idx, lat, codes = m
        # bucket number: the count of intervals this worker has sent so far
        wb = counters.setdefault(f"_wb{idx}", 0)
        counters[f"_wb{idx}"] = wb + 1
        bk = buckets.setdefault(wb, {"lat": [], "codes": {}, "from": set()})
        bk["lat"] += lat
        bk["from"].add(idx)
        for k, v in codes.items():
            bk["codes"][k] = bk["codes"].get(k, 0) + v
            all_codes[k] = all_codes.get(k, 0) + v
        if len(bk["from"]) == WORKERS and wb == reported and wb < n_int:
            reported += 1
            secs = min(INTERVAL, DURATION - wb * INTERVAL)
            ls = sorted(bk["lat"])
            rss, fds, thr = proc_stats(VPID)
            c5 = sum(v for k, v in bk["codes"].items() if int(k.split(":")[1]) >= 500)
            c4 = sum(v for k, v in bk["codes"].items() if 400 <= int(k.split(":")[1]) < 500)
            ce = sum(v for k, v in bk["codes"].items() if k.endswith(":0"))
            ac = audit_count(conn, admin)
            lo, hi = t0 + wb * INTERVAL, t0 + (wb + 1) * INTERVAL
            in_iv = [x for x in samples if lo <= x[0] < hi]
            med = median([x[1] for x in in_iv] + [rss])
            kinds = [x[2] for x in in_iv] or [fd_kinds(VPID)]
            fmed = median([sum(k) for k in kinds])
            rows.append((wb, med, fds, thr, rss, fmed))
            p(f"{min(DURATION, (wb + 1) * INTERVAL) / 60:>6.1f} {len(ls) / secs:>7.0f} {pct(ls, 50):>7.2f} "
              f"{pct(ls, 99):>7.2f} {rss / 1024:>8.1f} {med / 1024:>6.1f} {fds:>5} {thr:>4} {du(DATA_DIR) / 2**20:>9.2f} "
              f"{ac:>7} {c5:>4} {c4:>4} {ce:>8}")
            p(f"    (fds in the interval, median of {len(kinds)} samples: {fmed:g}; files "
              f"{median([k[0] for k in kinds]):g}, sockets {median([k[1] for k in kinds]):g}, "
              f"other {median([k[2] for k in kinds]):g}; at the report: {fds})")
    for pr in procs:
        pr.join()
    stop.set()
    for t in ts:
        t.join(timeout=10)
    time.sleep(FAULT_EVERY + 5)  # the last stalled fetch times out, idle connections settle
    rss1, fds1, thr1 = proc_stats(VPID)
    p(f"idle, after the traffic: RSS {rss1 / 1024:.1f} MiB, fds {fds1}, threads {thr1} "
      f"(idle before it, after the calibration: {rss0 / 1024:.1f} MiB, {fds0}, {thr0})")

    # 3. Summary.
    total = sum(all_codes.values())
    p(f"\noperations: {total} in {DURATION}s ({total / DURATION:.0f}/s); by operation and status:")
    for k in sorted(all_codes):
        p(f"  {k} {all_codes[k]}")
    side = {k: v for k, v in counters.items() if not k.startswith("_")}
    p(f"side traffic (login/logout, injected faults): {dict(sorted(side.items()))}")
    unexpected_5xx = sum(v for k, v in all_codes.items() if int(k.split(":")[1]) >= 500) + sum(
        v for k, v in side.items() if not k.startswith("fault_") and int(k.split(":")[1]) >= 500)
    conn_errors = sum(v for k, v in all_codes.items() if k.endswith(":0")) + sum(
        v for k, v in side.items() if k.endswith(":0"))
    fault_5xx = sum(v for k, v in side.items() if k.startswith("fault_") and int(k.split(":")[1]) >= 500)
    fault_other = sum(v for k, v in side.items() if k.startswith("fault_") and int(k.split(":")[1]) < 500)
    non2xx = {k: v for k, v in all_codes.items() if not k.split(":")[1].startswith("2")}

    after_warm = [r for r in rows if (r[0] + 1) * INTERVAL > WARMUP]
    if len(after_warm) >= 2:
        first, last = after_warm[0], after_warm[-1]
        drift = lambda a, b: 100.0 * (b - a) / a  # noqa: E731
        rss_d, fds_d = drift(first[1], last[1]), drift(first[5], last[5])
        rss_max = 100.0 * (max(r[1] for r in after_warm) - first[1]) / first[1]
        p(f"drift after warm-up ({WARMUP}s), first to last report: RSS (interval medians, "
          f"one sample every {RSS_EVERY:.0f} s) {rss_d:+.1f} %, at the report instants "
          f"{drift(first[4], last[4]):+.1f} % (largest rise of the medians {rss_max:+.1f} %), fds (interval medians) {fds_d:+.1f} %, at the report instants {drift(first[2], last[2]):+.1f} %, threads {first[3]} -> {last[3]}")
    else:
        rss_d = fds_d = None
        p("drift: too few reports after warm-up to say")

    # 4. Read back every acknowledged change (last acknowledged state per name).
    def readback(c, tok):
        h = {"authorization": f"Bearer {tok}"}
        final = {}
        for kind, name, exp in acked:
            final[(kind, name)] = exp
        st, raw = c.req("GET", "/v1/keys", None, h)
        keys = {k["id"]: k["name"] for k in json.loads(raw)["keys"]} if st == 200 else None
        st, raw = c.req("GET", "/v1/roles", None, h)
        roles = {r["name"] for r in json.loads(raw)["roles"]} if st == 200 else None
        missing, checked = [], 0
        unsure_set = set(unsure)
        for (kind, name), exp in final.items():
            if name in unsure_set:
                continue
            checked += 1
            if kind == "cred":
                st, raw = c.req("GET", f"/v1/credentials/{name}", None, h)
                ok = (st == 404) if exp is None else (
                    st == 200 and json.loads(raw).get("description") == exp)
            elif kind == "key":
                ok = keys is not None and ((name not in keys) if exp is None else keys.get(name) == exp)
            else:
                ok = roles is not None and ((name not in roles) if exp is None else name in roles)
            if not ok:
                missing.append((kind, name, exp))
        return checked, missing

    checked, missing = readback(conn, admin_token)
    p(f"acknowledged changes: {len(acked)} ({checked} names checked at their last acknowledged "
      f"state, {len(set(unsure))} left out as unanswered); missing on the live server: {len(missing)} "
      f"{missing[:5]}")
    # Restart the server on the same data directory and read them back again.
    os.kill(VPID, signal.SIGTERM)
    for _ in range(200):
        if not os.path.exists(f"/proc/{VPID}") or open(f"/proc/{VPID}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.05)
    p2 = subprocess.Popen(ENV["RESTART_CMD"], shell=True, stdout=subprocess.PIPE, text=True)
    with open(ENV["V2_PIDFILE"], "w") as f:
        f.write(str(p2.pid))
    line = ""
    while "listening on" not in line:
        line = p2.stdout.readline()
        if not line:
            raise SystemExit("the restarted server did not start")
    addr = line.strip().rsplit("/", 1)[-1]
    global V_PORT
    V_PORT = int(addr.split(":")[1])
    c2 = Conn()
    tok2 = login(c2)
    checked2, missing2 = readback(c2, tok2)
    p(f"after a restart on the same data directory: {checked2} checked, missing {len(missing2)} {missing2[:5]}")
    p2.send_signal(signal.SIGTERM)
    p2.wait(timeout=30)

    p("\nTARGETS")
    verdict = lambda d: "n/a (too short)" if d is None else ("PASS" if abs(d) < 5 else "FAIL")  # noqa: E731
    p(f"  RSS flat (drift of the interval medians < 5 % after warm-up): {verdict(rss_d)}"
      f" ({'n/a' if rss_d is None else f'{rss_d:+.1f} %'})")
    p(f"  fds flat (drift of the interval medians < 5 % after warm-up): {verdict(fds_d)}"
      f" ({'n/a' if fds_d is None else f'{fds_d:+.1f} %'})")
    p(f"  0 5xx apart from injected faults: {'PASS' if unexpected_5xx == 0 else 'FAIL'} ({unexpected_5xx};"
      f" injected faults answered 5xx: {fault_5xx}, otherwise: {fault_other}; connection errors: {conn_errors})")
    p(f"  0 acknowledged writes missing: {'PASS' if not missing and not missing2 else 'FAIL'}"
      f" ({len(missing)} live, {len(missing2)} after restart)")
    if non2xx:
        p(f"  (non-2xx of the mix, for the record: {non2xx})")


if __name__ == "__main__":
    main()
