"""Messages between a run's parent and its child processes: one stream socket, each message
an 8-byte big-endian length and that many bytes of pickle, read and written on the loop.

A message arrives whole or not at all. The reader waits for the length and then for
exactly that many bytes, however the kernel splits them into reads: a pipe or socket
delivers a large message in several pieces, and a reader woken by the first piece must
wait for the rest rather than take the missing bytes for a lost peer. The writer buffers
(the transport writes what the socket takes now and the rest when it has room), so
sending from a callback never blocks the loop.

Both ends are our own processes, started from this package: the pickle is theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import struct
from typing import Any

__all__ = ["Channel"]

_HEADER = struct.Struct("!Q")


class Channel:
    """One end of a parent-child stream: ``send`` (buffered), ``recv`` (a whole message,
    EOFError once the other end has closed), ``aclose``."""

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        """Attach a connected AF_UNIX stream socket to the running loop."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: Any) -> None:
        """Queue ``message``; the transport writes it. Nothing is sent once the peer is gone."""
        if self._writer.is_closing():
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEADER.pack(len(data)) + data)

    async def drain(self) -> None:
        """Wait until everything sent is in the kernel's hands (OSError if the peer left)."""
        await self._writer.drain()

    async def recv(self) -> Any:
        """The next whole message; EOFError when the peer closed (even mid-message)."""
        try:
            head = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(head)
            data = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise EOFError("the other process closed its end") from None
        return pickle.loads(data)

    async def aclose(self) -> None:
        """Close this end, after writing what is queued if the peer still reads."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
