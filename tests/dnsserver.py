"""A small authoritative DNS server for tests, on a free 127.0.0.1 port (UDP and TCP), built on dnspython.

    with DnsServer() as dns_server:
        dns_server.set("example.com", "MX", ["10 mx.example.com."])
        dns_server.set("mx.example.com", "A", ["127.0.0.2"])
        KinmailServer(..., sections={"dns": {"nameservers": [dns_server.address]}})

Every name is answered authoritatively: records that were set; NODATA (NOERROR, no answer, an SOA in the
authority section) for a name that exists with other types or below which names exist; NXDOMAIN otherwise.
`servfail(name)` makes a name answer SERVFAIL (a temporary failure). TTLs default to 0 so that tests can
change records between queries without a resolver cache getting in the way. Long TXT values are split into
255-byte strings (RFC 1035 §3.3.14). UDP answers that do not fit are truncated (TC), and the client retries
over TCP. `queries` records (name, type) of every question, for assertions.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def _norm(name: str) -> str:
    return name.rstrip(".").lower() + "."


def txt_value(text: str) -> str:
    """A TXT rdata text: the value split in quoted strings of at most 255 bytes."""
    raw = text.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class DnsServer:
    """An in-memory zone served on 127.0.0.1:PORT over UDP and TCP."""

    def __init__(self, host: str = "127.0.0.1", ttl: int = 0) -> None:
        self.host = host
        self.ttl = ttl
        self._records: dict[tuple[str, int], list[str]] = {}
        self._ttls: dict[tuple[str, int], int] = {}
        self._servfail: set[str] = set()
        self._lock = threading.Lock()
        self.queries: list[tuple[str, str]] = []
        self.tcp_queries = 0
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self.port = 0

    # --- records -----------------------------------------------------------------------------------------
    def set(self, name: str, rdtype: str, values: list[str] | str, ttl: int | None = None) -> None:
        """Replace the records of one type of a name. TXT values are plain text (quoting done here)."""
        if isinstance(values, str):
            values = [values]
        kind = dns.rdatatype.from_text(rdtype)
        if kind == dns.rdatatype.TXT:
            values = [txt_value(v) for v in values]
        for value in values:  # fail here, in the test, on a malformed value
            dns.rdata.from_text(dns.rdataclass.IN, kind, value)
        with self._lock:
            key = (_norm(name), int(kind))
            self._records[key] = list(values)
            self._ttls[key] = self.ttl if ttl is None else ttl

    def remove(self, name: str, rdtype: str | None = None) -> None:
        with self._lock:
            for key in list(self._records):
                if key[0] == _norm(name) and (rdtype is None or key[1] == dns.rdatatype.from_text(rdtype)):
                    del self._records[key]

    def servfail(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._servfail.add if on else self._servfail.discard)(_norm(name))

    @property
    def address(self) -> str:
        """ "127.0.0.1:PORT", as `[dns] nameservers` takes it."""
        return f"{self.host}:{self.port}"

    # --- answering ---------------------------------------------------------------------------------------
    def _exists(self, name: str) -> bool:
        return any(key[0] == name or key[0].endswith("." + name) for key in self._records)

    def _soa(self, name: dns.name.Name) -> dns.rrset.RRset:
        zone = name.parent() if len(name.labels) > 2 else name
        suffix = "" if zone == dns.name.root else zone.to_text()
        return dns.rrset.from_text(
            zone, self.ttl, "IN", "SOA", f"ns.{suffix} hostmaster.{suffix} 1 3600 600 86400 {self.ttl}"
        )

    def answer(self, wire: bytes) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname = question.name.to_text().lower()
        self.queries.append((qname.rstrip("."), dns.rdatatype.to_text(question.rdtype)))
        with self._lock:
            if qname in self._servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            name = qname
            for _ in range(8):  # follow CNAMEs inside our data
                cname = self._records.get((name, dns.rdatatype.CNAME))
                if cname and question.rdtype != dns.rdatatype.CNAME:
                    response.answer.append(
                        dns.rrset.from_text_list(
                            name, self._ttls[(name, dns.rdatatype.CNAME)], "IN", "CNAME", cname
                        )
                    )
                    name = _norm(cname[0])
                    continue
                break
            values = self._records.get((name, int(question.rdtype)))
            if values:
                ttl = self._ttls[(name, int(question.rdtype))]
                response.answer.append(
                    dns.rrset.from_text_list(name, ttl, "IN", dns.rdatatype.to_text(question.rdtype), values)
                )
            elif not response.answer:
                if not self._exists(name):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(self._soa(dns.name.from_text(name)))
        return response

    # --- serving -----------------------------------------------------------------------------------------
    def start(self) -> DnsServer:
        owner = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                response = owner.answer(data)
                if response is None:
                    return
                size = max(512, response.request_payload or 0) if response.edns >= 0 else 512
                try:
                    wire = response.to_wire(max_size=size)
                except dns.exception.TooBig:
                    response.answer.clear()
                    response.authority.clear()
                    response.flags |= dns.flags.TC
                    wire = response.to_wire()
                sock.sendto(wire, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while True:
                        header = _recv_exact(conn, 2)
                        if header is None:
                            return
                        data = _recv_exact(conn, struct.unpack("!H", header)[0])
                        if data is None:
                            return
                        owner.tcp_queries += 1
                        response = owner.answer(data)
                        if response is None:
                            return
                        wire = response.to_wire()
                        conn.sendall(struct.pack("!H", len(wire)) + wire)

        for _ in range(20):
            udp = socketserver.ThreadingUDPServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = socketserver.ThreadingTCPServer((self.host, port), Tcp, bind_and_activate=False)
                tcp.allow_reuse_address = True
                tcp.server_bind()
                tcp.server_activate()
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        udp.daemon_threads = True
        tcp.daemon_threads = True
        self._udp, self._tcp, self.port = udp, tcp, port
        for server in (udp, tcp):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._udp = self._tcp = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
