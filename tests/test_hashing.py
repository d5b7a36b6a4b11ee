"""The hashing pool admits as many checks as its threads and queue hold, and refuses the next at once."""

from __future__ import annotations

import pytest

from otpservice.domain.codes import CodeHasher
from otpservice.domain.errors import Overloaded
from otpservice.service.hashing import HashingPool
from otpservice.settings import Argon2Settings


def test_a_check_beyond_threads_and_queue_is_refused_and_a_freed_place_is_taken_again() -> None:
    """With one thread and a queue of one, a third check is refused while two are admitted, and
    admitted again once one of them is done."""
    pool = HashingPool(CodeHasher(b"p" * 32, Argon2Settings(time_cost=1, memory_cost_kib=8)), 1, queue=1)
    try:
        with pool.admission():
            with pool.admission():
                assert _full(pool)
                with pytest.raises(Overloaded), pool.admission():
                    pass
            assert not _full(pool)
            with pool.admission():
                pass
    finally:
        pool.close()


def _full(pool: HashingPool) -> bool:
    return pool.full
