"""Per-key wake-ups (issue 27, the hub under load): a study's thread is woken by its own round
only, so the work an answer causes does not grow with the studies in flight; a keyless wake
(the runner stopping, a listener reconnecting) and `close` still reach every waiter; no entry
outlives its watch; and on PostgreSQL a wake published by another worker reaches only the keys
it names. Real threads, a real hub (SQLite) and a real PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from ccdp.federation.hub.app import Hub
from ccdp.federation.hub.db import open_database
from ccdp.federation.hub.models import NodeRow, RoundRow
from ccdp.federation.hub.runner import HubTransport
from ccdp.federation.hub.wakeup import PgWaker, WakeNotHooked, Waker, wake_after_commit
from ccdp.wire.protocol import Answer, Task
from tests.federation.conftest import LONG, running_count_study
from tests.federation.netutil import wait_until
from tests.federation.pg import temporary_database

# LONG: no wait here may end by its timeout, only a wake ends it


class Waiter:
    """A thread that waits on `keys` as a study's runner does, counting how often it woke."""

    def __init__(self, waker: Waker, *keys: str) -> None:
        self.waker = waker
        self.keys = keys
        self.woken = 0
        self.watching = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.watching.wait(10)

    def _run(self) -> None:
        with self.waker.watch(*self.keys) as watch:
            seen = watch.seen()
            self.watching.set()
            while not self.done.is_set():
                seen = watch.wait(seen, LONG)
                self.woken += 1

    def wait_beyond(self, woken: int, timeout: float) -> bool:
        """True once this waiter has woken more than `woken` times, within `timeout` s."""
        try:
            wait_until(lambda: self.woken > woken, timeout)
        except AssertionError:
            return False
        return True

    def stop(self) -> None:
        self.done.set()
        self.waker.wake()
        self.thread.join(10)
        assert not self.thread.is_alive()


@contextmanager
def waiters(waker: Waker, *keys: str) -> Iterator[dict[str, Waiter]]:
    ws = {key: Waiter(waker, key) for key in keys}
    try:
        yield ws
    finally:
        for w in ws.values():
            w.stop()


def test_a_wake_for_one_round_leaves_a_thread_waiting_on_another_asleep():
    waker = Waker()
    with waiters(waker, "round:1", "round:2") as ws:
        for _ in range(200):
            waker.wake("study:2", "round:2")
        wait_until(lambda: ws["round:2"].woken >= 1, 10)
        assert ws["round:1"].woken == 0  # the shared condition woke it 200 times
        waker.wake("round:1")
        wait_until(lambda: ws["round:1"].woken == 1, 10)
    assert waker.watching() == 0  # no key's entry outlives its last watch


def test_a_keyless_wake_and_close_reach_every_waiting_thread():
    waker = Waker()
    with waiters(waker, "round:1", "round:2", "study:3") as ws:
        waker.wake()  # as the runner does when it stops
        wait_until(lambda: all(w.woken == 1 for w in ws.values()), 10)
        waker.wake_everyone()  # as the listener does after it reconnects
        wait_until(lambda: all(w.woken == 2 for w in ws.values()), 10)
        waker.close()
        wait_until(lambda: all(w.woken == 3 for w in ws.values()), 10)
    assert waker.watching() == 0


def test_a_wake_between_the_look_and_the_wait_is_not_lost():
    waker = Waker()
    with waker.watch("round:1") as watch:
        seen = watch.seen()
        waker.wake("round:1")  # the answer lands after the database was read
        assert watch.wait(seen, LONG) != seen  # returns at once, not after an hour


def roll_back_then_commit(
    waker: Waker, engine: Engine, ws: dict[str, Waiter], woken: int
) -> sessionmaker[Session]:
    """`waker` announces round:1 in a transaction that rolls back, then round:2 in one that
    commits: round:2's waiter (woken `woken` times so far) wakes at the commit and not before,
    round:1's never. Returns the hooked sessions."""
    sessions = sessionmaker(engine)
    wake_after_commit(sessions)
    try:
        with sessions.begin() as s:
            waker.announce(s, ["round:1"])
            raise RuntimeError("the write fails")
    except RuntimeError:
        pass
    with sessions.begin() as s:
        waker.announce(s, ["round:2"])
        assert not ws["round:2"].wait_beyond(woken, 0.5)  # held by the transaction
    assert ws["round:2"].wait_beyond(woken, 30)
    # the rolled-back one never arrives (it would have come before the committed)
    assert not ws["round:1"].wait_beyond(woken, 1.0)
    return sessions


def test_a_wake_announced_in_a_session_wakes_this_process_at_commit_only(tmp_path: Path):
    """One process (SQLite): what a transaction announced wakes its waiters once it commits;
    one that rolls back wakes nobody; a session nobody hooked is refused, not silently lost."""
    waker = Waker()
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with waiters(waker, "round:1", "round:2") as ws:
        sessions = roll_back_then_commit(waker, engine, ws, woken=0)
        with sessions.begin() as s:  # the next transaction does not repeat the last one's wake
            s.connection()
        assert not ws["round:2"].wait_beyond(1, 0.3)
    unhooked = sessionmaker(create_engine(f"sqlite:///{tmp_path / 'u.db'}"))
    with unhooked.begin() as s, pytest.raises(WakeNotHooked):
        waker.announce(s, ["round:1"])


def _node_id(hub: Hub, name: str) -> int:
    with hub.sessions() as s:
        return s.scalars(select(NodeRow.id).where(NodeRow.name == name)).one()


def _open_tasks(hub: Hub, node_id: int, n: int) -> dict[str, str]:
    """study id -> task id of this node's open tasks, once there are `n`."""
    tasks = wait_until(lambda: len(got := hub.pending_tasks(node_id, redeliver=True)) == n and got)
    return {t.study_id: t.task_id for t in tasks}


def _round_of(hub: Hub, study_id: str) -> int:
    with hub.sessions() as s:
        return s.scalars(select(RoundRow.id).where(RoundRow.study_id == study_id)).one()


def _counting(
    fn: Callable[[int], tuple[bool, datetime]], calls: Counter[int]
) -> Callable[[int], tuple[bool, datetime]]:
    def round_state(round_id: int) -> tuple[bool, datetime]:
        calls[round_id] += 1
        return fn(round_id)

    return round_state


def test_an_answer_wakes_its_own_study_at_once_and_no_other(tmp_path: Path):
    """Two studies wait on rounds to FR and DE; FR's answer to study A re-reads A's round
    once and B's not at all; then every answer ends its round at once (the poll is an hour)."""
    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True)
    for name in ("FR", "DE"):
        hub.add_node(name, name)
    owner = hub.authenticate(hub.add_user("ana", "researcher"))
    calls: Counter[int] = Counter()
    hub.round_state = _counting(hub.round_state, calls)
    asking, answers, sids = [], {}, []
    for title in ("A", "B"):
        sid = running_count_study(hub, owner, ["FR", "DE"], title=title)
        transport = HubTransport(hub, sid, ["FR", "DE"], LONG, threading.Event(), poll=LONG)
        task = Task(task_id=title, study_id="local", round=0, analysis="count")
        t = threading.Thread(
            target=lambda tr=transport, tk=task, s=sid: answers.update(
                {s: tr.ask(tk, ["FR", "DE"])}
            ),
            daemon=True,
        )
        t.start()
        asking.append(t)
        sids.append(sid)
    fr, de = _node_id(hub, "FR"), _node_id(hub, "DE")
    task_of = {n: _open_tasks(hub, n, 2) for n in (fr, de)}  # node -> study -> task id
    wait_until(lambda: len(calls) == 2, 30)  # each thread read its round once, then waits
    wait_until(lambda: hub.waker.watching() == 4, 30)  # each watches its round and its study
    round_a, round_b = (_round_of(hub, sid) for sid in sids)
    a = sids[0]
    hub.record_answer(fr, Answer(task_id=task_of[fr][a], node="FR", status="failed", reason="r"))
    wait_until(lambda: calls[round_a] == 2, 10)  # A looked again at once
    for sid in sids:
        for n, name in ((de, "DE"), (fr, "FR")):
            if (n, sid) != (fr, a):
                answer = Answer(task_id=task_of[n][sid], node=name, status="failed", reason="r")
                hub.record_answer(n, answer)
    for t in asking:
        t.join(30)
        assert not t.is_alive()
    assert sorted(answers) == sorted(sids)
    # one look, then one per answer at most: B slept through A's answers (shared: up to 5)
    assert calls[round_a] <= 3 and calls[round_b] <= 3, calls
    assert hub.waker.watching() == 0


@contextmanager
def listening_worker(*keys: str) -> Iterator[tuple[dict[str, Waiter], PgWaker, Engine]]:
    """Two workers' wakers on one fresh PostgreSQL database: waiters on `keys` in the first,
    listening, each woken once by its first LISTEN; yields them, the second worker's waker and
    its engine."""
    with temporary_database() as db:
        engines = [create_engine(db) for _ in range(2)]
        mine, theirs = PgWaker(engines[0]), PgWaker(engines[1])
        loop = asyncio.new_event_loop()  # not run: the listener only needs it bound
        try:
            with waiters(mine, *keys) as ws:
                mine.bind(loop)
                assert mine.listening.wait(30)
                # the first LISTEN wakes everyone once (what it may have missed)
                wait_until(lambda: all(w.woken == 1 for w in ws.values()), 30)
                yield ws, theirs, engines[1]
        finally:
            mine.close()
            loop.close()
            for engine in engines:
                engine.dispose()


def test_a_notify_from_another_worker_wakes_only_the_keys_it_names_here():
    with listening_worker("round:1", "round:2") as (ws, theirs, _):
        theirs.wake("study:9", "round:2")
        wait_until(lambda: ws["round:2"].woken == 2, 30)
        theirs.wake("round:1")
        wait_until(lambda: ws["round:1"].woken == 2, 30)
        assert ws["round:2"].woken == 2


def test_a_look_woken_for_a_new_task_delivers_it_without_the_idle_read(tmp_path: Path):
    """A node's long poll reads once that it has nothing (no write transaction), then sleeps;
    the round opened for it wakes it and the look goes straight to delivering the task,
    without that read again. A wake that brings nothing (a task already taken) still finds
    nothing, and the poll goes back to waiting until its time is up."""
    from ccdp.federation.hub.context import Principal
    from ccdp.federation.hub.routes import next_tasks

    hub = Hub(open_database(f"sqlite:///{tmp_path / 'hub.db'}"), open_studies=True)
    hub.add_node("FR", "FR")
    owner = hub.authenticate(hub.add_user("ana", "researcher"))
    sid = running_count_study(hub, owner, ["FR"])
    fr = _node_id(hub, "FR")
    node = Principal(kind="node", id=fr, name="FR")
    reads: list[int] = []
    has_open = hub._has_open_tasks

    def counted(node_id: int, states: tuple[str, ...]) -> bool:
        found = has_open(node_id, states)
        reads.append(node_id)  # after the read: the look is over once it is counted
        return found

    async def looked() -> None:
        hub.waker.bind(asyncio.get_running_loop())
        while not reads:
            await asyncio.sleep(0.01)

    hub._has_open_tasks = counted  # type: ignore[method-assign]

    async def poll_then_open() -> list[Task]:
        polling = asyncio.ensure_future(next_tasks(hub, node, LONG, redeliver=False))
        await looked()
        task = Task(task_id="t", study_id=sid, round=0, analysis="count")
        await asyncio.to_thread(hub.open_round, sid, 0, task, ["FR"], 600)
        return await asyncio.wait_for(polling, 10)

    (got,) = asyncio.run(poll_then_open())
    assert got.study_id == sid and reads == [fr]  # the one read before the wait, none after
    assert hub.pending_tasks(fr) == []  # delivered by the woken look

    async def woken_for_nothing() -> list[Task]:
        polling = asyncio.ensure_future(next_tasks(hub, node, 0.5, redeliver=False))
        await looked()
        hub.waker.wake(f"node:{fr}")
        return await asyncio.wait_for(polling, 10)

    reads.clear()
    assert asyncio.run(woken_for_nothing()) == []
    assert reads[:1] == [fr]  # looked, woke, looked without the read, waited out its time


def test_a_wake_announced_in_a_transaction_reaches_other_workers_at_commit_only():
    """`announce` rides the writing transaction: another worker is woken once it commits,
    never by one that rolls back."""
    with listening_worker("round:1", "round:2") as (ws, theirs, engine):
        roll_back_then_commit(theirs, engine, ws, woken=1)


def test_an_answer_and_a_round_wake_other_workers_without_a_separate_publish():
    """A study's status, a round opened and an answer each wake another worker through their
    own transaction: no separate publish (a connection, a statement and a commit, which cost
    every answer)."""
    with temporary_database() as db:
        hub = Hub(open_database(db), open_studies=True)
        assert isinstance(hub.waker, PgWaker)
        published: list[list[str]] = []
        hub.waker.publish = lambda keys: published.append(list(keys))  # type: ignore[method-assign]
        other = PgWaker(create_engine(db))
        loop = asyncio.new_event_loop()
        try:
            node = hub.authenticate(hub.add_node("N0", "FR"))
            owner = hub.authenticate(hub.add_user("u", "researcher"))
            assert node is not None and owner is not None
            study = hub.create_study(
                {"analysis": "count"},
                analysis="count",
                title="t",
                nodes=["N0"],
                min_nodes=1,
                timeout=3600,
                owner=owner,
            )
            with waiters(other, f"node:{node.id}", "round:1", f"study:{study}") as ws:
                other.bind(loop)
                assert other.listening.wait(30)
                wait_until(lambda: all(w.woken == 1 for w in ws.values()), 30)
                hub.set_study_status(study, "running")
                assert ws[f"study:{study}"].wait_beyond(1, 30)
                task = Task(task_id="x", study_id=study, round=0, analysis="rounds")
                round_id = hub.open_round(study, 0, task, ["N0"], 3600)
                assert round_id == 1
                assert ws[f"node:{node.id}"].wait_beyond(1, 30)
                (got,) = hub.pending_tasks(node.id)
                answer = Answer(task_id=got.task_id, node="N0", status="refused", reason="t")
                hub.record_answer(node.id, answer)
                assert ws["round:1"].wait_beyond(1, 30)
            assert published == []
        finally:
            other.close()
            loop.close()
            hub.sessions.kw["bind"].dispose()
