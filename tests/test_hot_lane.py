"""The hot lane (api/deps.py): the list's requests run one at a time, and slow work in the lane
does not hold the others up."""

from __future__ import annotations

import threading
import time

import anyio

from callhistory.api.deps import HotLane


class Tracker:
    """How many functions run at once, at most, and in which order they end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.ended: list[str] = []

    def work(self, name: str, seconds: float) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
            self.ended.append(name)
        return name


def test_fast_requests_run_one_at_a_time_in_order() -> None:
    lane, tracker = HotLane(width=1, stuck_after=1.0), Tracker()
    results: list[str] = []

    async def main() -> None:
        async def one(n: int) -> None:
            results.append(await lane.run(lambda: tracker.work(f"fast {n}", 0.01)))

        async with anyio.create_task_group() as group:
            for n in range(8):
                group.start_soon(one, n)

    anyio.run(main)
    assert tracker.most == 1
    assert sorted(results) == sorted(tracker.ended) == [f"fast {n}" for n in range(8)]


def test_slow_work_in_the_lane_is_gone_around() -> None:
    lane, tracker = HotLane(width=1, stuck_after=0.1), Tracker()
    finished: dict[str, float] = {}

    async def main() -> None:
        start = time.monotonic()

        async def one(name: str, seconds: float) -> None:
            await lane.run(lambda: tracker.work(name, seconds))
            finished[name] = time.monotonic() - start

        async with anyio.create_task_group() as group:
            group.start_soon(one, "slow", 2.0)
            await anyio.sleep(0.05)  # the slow one holds the lane
            for n in range(3):
                group.start_soon(one, f"fast {n}", 0.01)

    anyio.run(main)
    # The fast ones waited about stuck_after, not the slow one's two seconds.
    assert tracker.ended[-1] == "slow"
    assert max(finished[f"fast {n}"] for n in range(3)) < 1.0, finished
    assert finished["slow"] >= 2.0


def test_an_app_driven_from_several_event_loops_serves_them_all() -> None:
    """Each of the tests' clients runs the app on its own event loop (in its own thread): a lane
    shared by the loops left requests waiting for a wake-up that another loop never sent."""
    lane, tracker = HotLane(width=1, stuck_after=1.0), Tracker()

    def client(name: str) -> None:
        async def main() -> None:
            async with anyio.create_task_group() as group:
                for n in range(10):
                    group.start_soon(lane.run, lambda n=n: tracker.work(f"{name} {n}", 0.005))

        anyio.run(main)

    threads = [
        threading.Thread(target=client, args=(f"client {c}",), daemon=True) for c in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads), "a request waits forever"
    assert len(tracker.ended) == 30
