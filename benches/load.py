#!/usr/bin/env python3
"""Open-loop HTTP load for the saga benchmark, from a process of its own.

The outside view of `benches/saga.rs`: `POST /orders` at a fixed rate from a
separate Python process over keep-alive connections, as an independent probe
would send them, so the in-process load generator's figures can be checked
against it in the same run (BENCH_LOAD, BENCHMARKS.md). Standard library only.

Protocol with the benchmark: after every worker has connected it prints
`ready`; on a line on stdin it starts the clock, sends `rate * seconds`
orders, and prints one JSON object: how many were sent and accepted, how long
sending took, how late sends left against their schedule (an open loop that
cannot keep up says so here) and the CPU this process spent.
"""

import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time

BODY = (
    b'{"customer_id":"bench","tenant_region":"eu-west","currency":"EUR",'
    b'"items":[{"sku":"SKU-1","qty":2,"unit_price":"19.99"}]}'
)


def quantile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[round((len(values) - 1) * p)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port of the daemon")
    parser.add_argument("--rate", type=float, required=True, help="orders per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--key-prefix", required=True, help="idempotency keys are PREFIX-N")
    parser.add_argument("--workers", type=int, default=64, help="connections (and threads)")
    args = parser.parse_args()
    host, port = args.addr.rsplit(":", 1)

    def connect():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.connect()
        return conn

    jobs = queue.SimpleQueue()
    results = []  # (late seconds, response seconds, accepted)
    lock = threading.Lock()
    connected = threading.Barrier(args.workers + 1)

    def worker():
        conn = connect()
        connected.wait()
        mine = []
        while (job := jobs.get()) is not None:
            i, due = job
            started = time.monotonic()
            accepted = False
            # One retry on a fresh connection if the kept-alive one was closed;
            # the idempotency key makes the resend safe.
            for attempt in range(2):
                try:
                    conn.request(
                        "POST",
                        "/orders",
                        BODY,
                        {"Content-Type": "application/json", "Idempotency-Key": f"{args.key_prefix}-{i}"},
                    )
                    response = conn.getresponse()
                    response.read()
                    accepted = response.status == 201
                    break
                except (http.client.HTTPException, OSError):
                    conn.close()
                    if attempt == 0:
                        conn = connect()
            mine.append((started - due, time.monotonic() - started, accepted))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for t in threads:
        t.start()
    connected.wait()
    print("ready", flush=True)
    sys.stdin.readline()

    cpu_before = os.times()
    total = int(args.rate * args.seconds)
    t0 = time.monotonic()
    for i in range(total):
        due = t0 + i / args.rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        jobs.put((i, due))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    cpu_after = os.times()

    late = [r[0] * 1e3 for r in results]
    response = [r[1] * 1e3 for r in results]
    print(
        json.dumps(
            {
                "sent": len(results),
                "accepted": sum(1 for r in results if r[2]),
                "seconds": elapsed,
                "late_p50_ms": quantile(late, 0.5),
                "late_p99_ms": quantile(late, 0.99),
                "response_p50_ms": quantile(response, 0.5),
                "response_p99_ms": quantile(response, 0.99),
                "cpu_seconds": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
