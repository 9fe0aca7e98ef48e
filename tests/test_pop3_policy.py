"""POP3 with `[pop3] plaintext_auth_without_tls = "never"`: no password in the clear, even from loopback."""

from __future__ import annotations

import base64
import poplib
from collections.abc import Iterator

import pytest

from tests.serverctl import KinmailServer
from tests.test_pop3_helpers import Pop3Users, client_context, running_server

USERS = Pop3Users("pol", 2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinmailServer]:
    sections = {"pop3": {"plaintext_auth_without_tls": "never"}}
    with running_server(
        tmp_path_factory.mktemp("pop3p"), users=USERS.all(), sections=sections, services=("pop3", "pop3s")
    ) as srv:
        yield srv


def test_no_plaintext_login_before_stls(server: KinmailServer) -> None:
    user = USERS.take()
    pop = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    capa = pop.capa()
    assert "STLS" in capa and "USER" not in capa and "SASL" not in capa
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.user(user)
    token = base64.b64encode(f"\0{user}\0{USERS.password(user)}".encode()).decode()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop._shortcmd(f"AUTH PLAIN {token}")  # type: ignore[attr-defined]
    pop.stls(client_context(server))
    assert "USER" in pop.capa()
    pop.user(user)
    pop.pass_(USERS.password(user))
    assert pop.stat() == (0, 0)
    pop.quit()


def test_pop3s_allows_login(server: KinmailServer) -> None:
    user = USERS.take()
    pop = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), context=client_context(server), timeout=30)
    pop.user(user)
    pop.pass_(USERS.password(user))
    assert pop.stat() == (0, 0)
    pop.quit()
