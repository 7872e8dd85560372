"""Load on ``o1-embedder serve``: N concurrent clients vs the same kind of requests sent one at a time.

    python benchmarks/serve_load.py [--model o1-embedder] [--clients 8] [--requests 32] [--max-new-tokens 32]
                                    [--input-type query] [--inputs-per-request 1] [--max-seconds 300]
                                    [--device cpu] [--batch-window-ms 10] [--max-batch 32]
                                    [--late-requests 8] [--no-continuous-batching]

Starts the server as its own process on 127.0.0.1 (``o1-embedder serve``; greedy decoding, K=1, the thought
cache off), waits for ``/health``, then sends ``--requests`` requests one at a time and ``--requests`` more from
``--clients`` concurrent clients (official ``openai`` client, no retries). Every request carries distinct query
texts (first Cranfield queries, numbered when more are needed), so neither phase reuses the other's work.
While the concurrent phase runs, one more client sends ``--late-requests`` single queries one after another
(each sent once the server has been busy for a moment): their p50/p99 latency against the one-at-a-time phase's
says how long a query that arrives during a busy decode waits (with continuous batching it joins at the next
step; ``--no-continuous-batching`` runs the server batch at a time, for comparison).
Each phase stops sending at ``--max-seconds``. Prints, per phase: requests/s, p50/p99 latency, failed requests
(an error answer) and lost ones (no answer at all: both must be zero), the server's texts per model call, and at
the end the throughput ratio and the server's peak memory (as its ``/health`` reports it). Ratios only: machines
are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402

from o1_embedder.data import load_cranfield  # noqa: E402

HOST = "127.0.0.1"


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    lost: int = 0
    not_sent: int = 0
    seconds: float = 0.0
    model_calls: int = 0
    texts_run: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000 if ordered else float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def health(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
        return json.loads(response.read())


def start_server(args: argparse.Namespace, port: int, log) -> subprocess.Popen:
    """``o1-embedder serve`` in its own process, thinking greedily (K=1), thought cache off."""
    command = [sys.executable, "-m", "o1_embedder.cli", "serve", args.model, "--host", HOST, "--port", str(port),
               "--greedy", "--num-thoughts", "1", "--max-new-tokens", str(args.max_new_tokens),
               "--thought-cache", "off", "--batch-window-ms", str(args.batch_window_ms),
               "--max-batch", str(args.max_batch), "--served-model-name", "bench", "--log-level", "warning"]
    if not args.continuous_batching:
        command.append("--no-continuous-batching")
    if args.device:
        command += ["--device", args.device]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(server: subprocess.Popen, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} before it was ready")
        try:
            if health(base)["status"] == "ok":
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server was not ready within {timeout:.0f} s")


def request_texts(count: int, per_request: int, offset: int) -> list[list[str]]:
    """``count`` requests of ``per_request`` distinct texts, none shared with another request or phase."""
    queries = list(load_cranfield().queries.values())
    texts = [queries[i % len(queries)] + (f" (variant {i // len(queries)})" if i >= len(queries) else "")
             for i in range(offset, offset + count * per_request)]
    return [texts[i * per_request:(i + 1) * per_request] for i in range(count)]


async def send(phase: Phase, client: openai.AsyncOpenAI, texts: list[str], input_type: str) -> None:
    """One request; its latency, or a failed (error answer) or lost (no answer) count."""
    started = time.perf_counter()
    try:
        response = await client.embeddings.create(model="bench", input=texts, encoding_format="base64",
                                                  extra_body={"input_type": input_type})
    except openai.APIStatusError:
        phase.failed += 1
        return
    except openai.APIError:  # connection lost or timed out: no answer at all
        phase.lost += 1
        return
    if len(response.data) != len(texts):
        phase.lost += 1
        return
    phase.latencies.append(time.perf_counter() - started)


async def run_phase(phase: Phase, client: openai.AsyncOpenAI, requests: list[list[str]], input_type: str,
                    deadline: float) -> None:
    """``phase.clients`` workers take requests from one list until it is empty or the deadline passes."""
    pending = list(reversed(requests))

    async def worker() -> None:
        while pending:
            if time.monotonic() > deadline:
                phase.not_sent += len(pending)
                pending.clear()
                return
            await send(phase, client, pending.pop(), input_type)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(phase.clients)))
    phase.seconds = time.perf_counter() - started


async def measure(phase: Phase, base: str, client: openai.AsyncOpenAI, requests: list[list[str]], input_type: str,
                  max_seconds: float) -> Phase:
    """Run a phase and read the server's model-call counters around it."""
    before = (await asyncio.to_thread(health, base))["stats"]
    await run_phase(phase, client, requests, input_type, time.monotonic() + max_seconds)
    after = (await asyncio.to_thread(health, base))["stats"]
    phase.model_calls = after["batches"] - before["batches"]
    phase.texts_run = after["texts_run"] - before["texts_run"]
    return phase


async def late_arrivals(phase: Phase, client: openai.AsyncOpenAI, requests: list[list[str]], input_type: str,
                        lone: Phase, busy: asyncio.Task) -> None:
    """Single queries sent one after another while ``busy`` (the concurrent phase) runs: the first after twice a
    lone query's latency (the decode is full by then), each next one when the previous is answered."""
    await asyncio.sleep(2 * (lone.percentile(0.5) / 1000 if lone.latencies else 1.0))
    for position, texts in enumerate(requests):
        if busy.done():  # only arrivals at a busy server count
            phase.not_sent += len(requests) - position
            return
        started = time.perf_counter()
        await send(phase, client, texts, input_type)
        phase.seconds += time.perf_counter() - started


async def benchmark(args: argparse.Namespace, base: str) -> tuple[list[Phase], dict]:
    """Warm-up, then the one-at-a-time phase and the concurrent phase on distinct texts; the server's peak memory."""
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600)
    texts = request_texts(2 * args.requests + 2 + args.late_requests, args.inputs_per_request, 0)
    warm_up = Phase("warm-up", 1)
    await run_phase(warm_up, client, texts[:2], args.input_type, time.monotonic() + 600)
    one = await measure(Phase("one at a time", 1), base, client, texts[2:2 + args.requests], args.input_type,
                        args.max_seconds)
    late = Phase("late arrivals (during concurrent)", 1)
    late_texts = texts[2 + 2 * args.requests:]
    busy = asyncio.create_task(measure(Phase("concurrent", args.clients), base, client,
                                       texts[2 + args.requests:2 + 2 * args.requests], args.input_type,
                                       args.max_seconds))
    await late_arrivals(late, client, late_texts, args.input_type, one, busy)
    concurrent = await busy
    phases = [one, concurrent, late]
    phases[0].failed += warm_up.failed
    phases[0].lost += warm_up.lost
    await client.close()
    return phases, (await asyncio.to_thread(health, base))["memory"]


def report(phases: list[Phase], memory: dict) -> None:
    print("\n| run | clients | answered | seconds | requests/s | p50 ms | p99 ms | failed | lost | not sent "
          "| texts per model call |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        per_call = p.texts_run / p.model_calls if p.model_calls else float("nan")
        print(f"| {p.name} | {p.clients} | {len(p.latencies)} | {p.seconds:.1f} | {p.rate:.2f} | "
              f"{p.percentile(0.5):.0f} | {p.percentile(0.99):.0f} | {p.failed} | {p.lost} | {p.not_sent} | "
              f"{per_call:.1f} |")
    one, many, late = phases
    if one.rate:
        print(f"\nconcurrent / one-at-a-time throughput: {many.rate / one.rate:.2f}x; "
              f"p50 latency ratio: {many.percentile(0.5) / one.percentile(0.5):.2f}x")
    if late.latencies and one.latencies:
        lone = one.percentile(0.5)
        print(f"late arrivals during the concurrent phase / a lone query's p50 latency: "
              f"p50 {late.percentile(0.5) / lone:.2f}x, p99 {late.percentile(0.99) / lone:.2f}x")
    print(f"failed + lost requests: {sum(p.failed + p.lost for p in phases)} (must be 0)")
    print("server peak memory: " + ", ".join(f"{k} {v}" for k, v in memory.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="o1-embedder", help="model folder, or the embedded default")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the second phase")
    parser.add_argument("--requests", type=int, default=32, help="requests per phase")
    parser.add_argument("--inputs-per-request", type=int, default=1)
    parser.add_argument("--input-type", choices=("query", "document"), default="query")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="thought length limit")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="per phase: stop sending after this")
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--device", help="torch device for the server (default: as loaded)")
    parser.add_argument("--late-requests", type=int, default=8,
                        help="single queries sent one after another during the concurrent phase")
    parser.add_argument("--no-continuous-batching", dest="continuous_batching", action="store_false",
                        help="run the server batch at a time (for comparison)")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.requests <= 10_000:
        parser.error("--clients must be in 1..256 and --requests in 1..10000")

    port = free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile("w+") as log:
        server = start_server(args, port, log)
        try:
            wait_ready(server, base, args.startup_timeout)
            mode = "continuous batching" if args.continuous_batching else "batch at a time"
            print(f"model: {args.model}  greedy K=1  {mode}  max_new_tokens={args.max_new_tokens}  "
                  f"input_type={args.input_type}  inputs/request={args.inputs_per_request}  "
                  f"requests/phase={args.requests}  clients={args.clients}")
            phases, memory = asyncio.run(benchmark(args, base))
            report(phases, memory)
        except BaseException:
            log.seek(0)
            print("server log (tail):\n" + log.read()[-4000:], file=sys.stderr)
            raise
        finally:
            stop(server)
    return 0 if all(p.failed + p.lost == 0 for p in phases) else 1


def stop(server: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL if it does not end in time."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
