"""Two parallel jobs on this machine: torch's default threads vs cores ÷ jobs threads each.

    python scripts/bench_threads.py [--jobs 2] [--size 384] [--repeats 40]

Each job is a process doing the same matrix products (a stand-in for a tiny model's
decoding); the script prints the wall time of both settings and their ratio. What
calib.threads sets for a job under a parallel launcher is the second setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

JOB = """
import sys, torch
threads, size, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads > 0:
    torch.set_num_threads(threads)
a = torch.randn(size, size)
for _ in range(repeats):
    for _ in range(8):
        b = a @ a
        a = b / b.norm()
"""


def wall(jobs: int, threads: int, size: int, repeats: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(threads), str(size), str(repeats)], env=env
        )
        for _ in range(jobs)
    ]
    for process in processes:
        process.wait()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_job = max(1, (cores or 1) // args.jobs)
    default = wall(args.jobs, 0, args.size, args.repeats)
    shared = wall(args.jobs, per_job, args.size, args.repeats)
    print(f"{args.jobs} jobs on {cores} cores")
    print(f"  torch default threads : {default:.2f} s")
    print(f"  {per_job} thread(s) per job  : {shared:.2f} s")
    print(f"  ratio default / per-job: {default / shared:.2f}x")


if __name__ == "__main__":
    main()
