from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .servers import Server


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = await Server().start()
    yield s
    await s.stop()
