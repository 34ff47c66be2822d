"""The route table from several threads at once (the test API registers routes from any thread
while the proxy's thread looks them up)."""

from __future__ import annotations

import threading

from mitm_wsroute.router import Route, Router, registrar

THREADS = 4
PER_THREAD = 1000


def route(url: str) -> Route:
    made: list[Route] = []
    registrar(url, lambda ws: None, None, made.append)
    return made[0]


def test_concurrent_registrations_and_removals_lose_no_route() -> None:
    router = Router()
    unrelated = [route(f"ws://other/{i}") for i in range(PER_THREAD)]
    for r in unrelated:
        router.add(r)
    mine = [[route(f"ws://h/{t}/{i}") for i in range(PER_THREAD)] for t in range(THREADS)]
    start = threading.Barrier(THREADS + 2)

    def register(routes: list[Route]) -> None:
        start.wait()
        for r in routes:
            router.add(r)

    def remove() -> None:
        start.wait()
        for r in unrelated:
            router.remove(r.url)

    def find() -> None:
        start.wait()
        for i in range(PER_THREAD):
            router.find(f"ws://h/0/{i}")  # readers never see a table half-built

    threads = [threading.Thread(target=register, args=(routes,)) for routes in mine]
    threads += [threading.Thread(target=remove), threading.Thread(target=find)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    found = [router.find(f"ws://h/{t}/{i}") for t in range(THREADS) for i in range(PER_THREAD)]
    assert found == [r for routes in mine for r in routes]  # none lost
    assert router.find("ws://other/1") is None  # and the removed ones are gone


def test_scripts_and_option_routes_rank_below_direct_ones() -> None:
    router = Router()
    script, option, direct = route("**/x"), route("**/x"), route("**/x")
    router.set_order(["a.py"])
    router.replace("a.py", [script])
    assert router.find("ws://h/x") is script and "a.py" in router and len(router) == 1
    router.option_routes = (option,)
    assert router.find("ws://h/x") is option
    router.add(direct)
    assert router.find("ws://h/x") is direct
    router.remove(direct.url)
    router.option_routes = ()
    router.set_order([])
    assert router.find("ws://h/x") is None and "a.py" not in router
