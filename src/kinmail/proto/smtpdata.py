"""The DATA decoder without I/O: bytes in, message bytes out, until the line "." (RFC 5321 §4.1.1.4).

Only CRLF "." CRLF ends the message: a "." line ended by a bare LF or CR is not an end. A bare LF or bare CR
anywhere in the data marks the message `bad_line_ending` (SMTP smuggling, RFC 5321 §2.3.8) and the server
refuses it once the real end arrives. Dot-stuffing is undone (RFC 5321 §4.5.2). Past `limit` bytes the
message is marked `too_big` and the rest is read and dropped, so memory stays flat. Keeps nothing on disk.
"""

from __future__ import annotations


class DataDecoder:
    """Feed received bytes; collect the returned message bytes; stop when `done`; `leftover` is pipelined input."""

    __slots__ = ("_pending", "bad_line_ending", "done", "leftover", "limit", "size", "too_big")

    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else 1 << 62
        self.size = 0
        self.done = False
        self.too_big = False
        self.bad_line_ending = False
        self.leftover = b""
        self._pending = b""  # the start of a line whose CRLF has not arrived yet

    def feed(self, data: bytes) -> bytes:
        """Decode `data`; returns the message bytes to keep (empty once too big or done)."""
        if self.done:
            self.leftover += data
            return b""
        buf = self._pending + data if self._pending else data
        cut = buf.rfind(b"\r\n")
        if cut < 0:
            self._pending = buf
            if len(buf) > 1 << 20:  # a "line" of a megabyte: pass it on, keep only the tail
                head, self._pending = buf[:-1], buf[-1:]
                if b"\n" in head or b"\r" in head:
                    self.bad_line_ending = True
                return self._account(head)
            return b""
        chunk, self._pending = buf[: cut + 2], buf[cut + 2 :]
        if b".\r\n" in chunk and (chunk.startswith(b".\r\n") or b"\r\n.\r\n" in chunk):
            end = 0 if chunk.startswith(b".\r\n") else chunk.index(b"\r\n.\r\n") + 2
            self.leftover = chunk[end + 3 :] + self._pending
            self._pending = b""
            chunk = chunk[:end]
            self.done = True
        if not chunk:
            return b""
        if chunk.count(b"\n") != chunk.count(b"\r\n") or chunk.count(b"\r") != chunk.count(b"\r\n"):
            self.bad_line_ending = True
        if chunk.startswith(b".") or b"\r\n." in chunk:
            chunk = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in chunk.split(b"\r\n"))
        return self._account(chunk)

    def _account(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_big = True
        return b"" if self.too_big or self.bad_line_ending else chunk
