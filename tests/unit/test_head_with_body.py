"""HeadWithBody: a response head goes out with the start of its body, in one write."""

from __future__ import annotations

import asyncio

from seawall.serving import HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording(asyncio.Transport):
    """A transport that records each write (the socket's side of the contract)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_head_and_body_go_out_in_one_write() -> None:
    raw = Recording()
    t = HeadWithBody(raw, asyncio.get_running_loop())
    t.write(HEAD)
    assert raw.writes == []
    assert t.get_write_buffer_size() == len(HEAD)  # held bytes still count as unsent
    t.write(b"ok")
    t.write(b"more")
    assert raw.writes == [HEAD + b"ok", b"more"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert raw.writes == [HEAD + b"ok", b"more"]


async def test_a_head_without_a_body_goes_out_at_the_next_loop_turn() -> None:
    raw = Recording()
    t = HeadWithBody(raw, asyncio.get_running_loop())
    t.write(HEAD)
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]
    t.write(b"ok")  # a body after the head was sent: a write of its own
    assert raw.writes == [HEAD, b"ok"]


async def test_interim_answers_and_other_bytes_are_not_held() -> None:
    raw = Recording()
    t = HeadWithBody(raw, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    t.write(b"5\r\nhello\r\n")
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"5\r\nhello\r\n"]


async def test_close_sends_a_held_head_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    raw = Recording()
    t = HeadWithBody(raw, loop)
    t.write(HEAD + b"ok")  # a whole answer in one write (uvicorn's 4xx/5xx answers)
    t.close()
    assert raw.writes == [HEAD + b"ok"] and raw.closed
    raw2 = Recording()
    t2 = HeadWithBody(raw2, loop)
    t2.write(HEAD)
    t2.abort()
    await asyncio.sleep(0)
    assert raw2.writes == [] and raw2.aborted
    assert t2.is_closing()
