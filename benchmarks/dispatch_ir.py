"""Instructions per job of `Dispatcher.dispatch_nowait` or `dispatch`, for callgrind.

    valgrind --tool=callgrind python benchmarks/dispatch_ir.py 10000 nowait

Runs N no-op coroutine jobs on 16 workers, 20 dispatched per loop turn and then joined (a
burst, as hitd's runner hands claimed jobs over). Run it for N and N/2 under callgrind with
PYTHONHASHSEED=0 and take (Ir(N) - Ir(N/2)) / (N/2): the instructions of one more job, start-up
cancelled out (see README.md, "dispatch_ir.py").
"""

from __future__ import annotations

import argparse

import uvloop

from hitpool import Dispatcher


async def noop() -> None:
    pass


async def run(n: int, nowait: bool) -> None:
    async with Dispatcher(workers=16, queue_size=64) as pool:
        for _ in range(0, n, 20):
            for _ in range(20):
                if nowait:
                    pool.dispatch_nowait(noop)
                else:
                    await pool.dispatch(noop)
            await pool.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=int, help="how many jobs (a multiple of 20)")
    parser.add_argument("mode", choices=("nowait", "wait"), help="dispatch_nowait or dispatch")
    args = parser.parse_args()
    if args.jobs < 20 or args.jobs % 20:
        parser.error("jobs: give a multiple of 20, at least 20")
    uvloop.run(run(args.jobs, args.mode == "nowait"))


if __name__ == "__main__":
    main()
