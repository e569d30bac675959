"""Decision ids are valid, distinct UUID4 strings, also across a fork."""

from __future__ import annotations

import os
import uuid

from api.decide.ids import new_decision_id


def test_ids_are_canonical_uuid4_strings() -> None:
    for _ in range(2000):
        text = new_decision_id()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_ids_do_not_repeat_across_many_pools() -> None:
    ids = [new_decision_id() for _ in range(50_000)]  # about 200 refills
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_its_parents_pool() -> None:
    new_decision_id()  # a pool with ids left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_decision_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert uuid.UUID(child).version == 4
    assert child != new_decision_id()
