"""app/budget.py: reservations wait in arrival order for room, and a cancelled wait holds nothing."""

from __future__ import annotations

import asyncio

import pytest

from app.budget import MemoryBudget

pytestmark = pytest.mark.timeout(30)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_reservations_within_the_capacity_do_not_wait():
    async def main():
        budget = MemoryBudget(100)
        await budget.reserve(60)
        await budget.reserve(40)
        assert budget.used == 100 and budget.waiting == 0

    run(main())


def test_a_reservation_waits_for_room_and_gets_it_on_release():
    async def main():
        budget = MemoryBudget(100)
        await budget.reserve(80)
        waiter = asyncio.create_task(budget.reserve(30))
        await asyncio.sleep(0)
        assert not waiter.done() and budget.waiting == 1
        budget.release(80)
        await waiter
        assert budget.used == 30 and budget.waiting == 0

    run(main())


def test_waiters_are_served_in_arrival_order_so_a_large_one_is_not_overtaken():
    async def main():
        budget = MemoryBudget(100)
        await budget.reserve(90)
        order = []

        async def take(name, nbytes):
            await budget.reserve(nbytes)
            order.append(name)

        large = asyncio.create_task(take("large", 60))
        await asyncio.sleep(0)
        small = asyncio.create_task(take("small", 5))  # would fit now, but arrived later
        await asyncio.sleep(0)
        assert order == []
        budget.release(90)
        await asyncio.gather(large, small)
        assert order == ["large", "small"]

    run(main())


def test_a_cancelled_waiter_reserves_nothing_and_lets_the_next_through():
    async def main():
        budget = MemoryBudget(100)
        await budget.reserve(50)
        head = asyncio.create_task(budget.reserve(80))
        await asyncio.sleep(0)
        behind = asyncio.create_task(budget.reserve(40))
        await asyncio.sleep(0)
        head.cancel()
        await asyncio.gather(head, return_exceptions=True)
        await behind  # fits beside the 50 once the head is gone
        assert budget.used == 90 and budget.waiting == 0

    run(main())


def test_an_input_larger_than_the_budget_runs_alone():
    async def main():
        budget = MemoryBudget(10)
        await budget.reserve(25)  # nothing else held: let in
        assert budget.used == 25
        other = asyncio.create_task(budget.reserve(1))
        await asyncio.sleep(0)
        assert not other.done()
        budget.release(25)
        await other
        assert budget.used == 1

    run(main())


def test_releasing_more_than_was_reserved_is_a_bug_that_says_so():
    budget = MemoryBudget(10)
    with pytest.raises(RuntimeError, match="more than it reserved"):
        budget.release(1)
