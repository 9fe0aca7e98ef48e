"""`Authenticator.login` and login throttling: growing delays after the free failures, refusal without a
check after the lockout count, counts reset by a success and aged out by the window, IPv6 counted by /64,
the verification cache, a decoy check for unknown users, failures that outlive a restart (the state file), and logs that never contain the
password."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from kinmail.auth import authenticator as authenticator_module
from kinmail.auth.authenticator import Authenticator
from kinmail.auth.passwords import hash_password
from kinmail.auth.throttle import Limits, Throttle, ip_key
from kinmail.config.directory import Directory
from kinmail.config.load import load_config

PASSWORD = "right-password-7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def stored_hash() -> str:
    """A fast Dovecot {SSHA512} hash: these tests check many wrong passwords."""
    salt = b"saltsalt"
    return "{SSHA512}" + base64.b64encode(hashlib.sha512(PASSWORD.encode() + salt).digest() + salt).decode()


async def test_new_hashes_work_with_the_authenticator(tmp_path: Path) -> None:
    auth = _auth(_runtime(tmp_path, hash_password(PASSWORD)), Clock(), [])
    assert (await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.1")).ok


def _runtime(tmp_path: Path, stored: str, **auth: object) -> SimpleNamespace:
    settings = "".join(f"{key} = {value}\n" for key, value in auth.items())
    (tmp_path / "kinmail.toml").write_text(
        f'domains = ["example.test"]\ndata_dir = "data"\n[auth]\n{settings}'
    )
    (tmp_path / "users").write_text(f"alice@example.test:{stored}\nbob@example.test:{stored}\n")
    loaded = load_config(tmp_path / "kinmail.toml")
    return SimpleNamespace(config=loaded.config, directory=Directory.load(loaded), data_dir=loaded.data_dir)


def _auth(rt: SimpleNamespace, clock: Clock, sleeps: list[float]) -> Authenticator:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    return Authenticator(rt, clock=clock, sleep=fake_sleep)


async def test_right_and_wrong_passwords(tmp_path: Path, stored_hash: str) -> None:
    auth = _auth(_runtime(tmp_path, stored_hash), Clock(), [])
    ok = await auth.login("Alice@Example.TEST", PASSWORD, remote_ip="192.0.2.1", service="imap")
    assert ok.ok and ok.user == "alice@example.test" and not ok.throttled
    for user, password in [
        ("alice@example.test", "wrong"),
        ("nobody@example.test", PASSWORD),
        ("", PASSWORD),
    ]:
        result = await auth.login(user, password, remote_ip="192.0.2.1")
        assert not result.ok and result.user is None and not result.throttled


async def test_growing_delay_then_refusal_then_window_expiry(tmp_path: Path, stored_hash: str) -> None:
    rt = _runtime(
        tmp_path,
        stored_hash,
        throttle_free_failures=2,
        throttle_max_delay=4.0,
        throttle_lockout_failures=6,
        throttle_window=600,
    )
    clock, sleeps = Clock(), []
    auth = _auth(rt, clock, sleeps)
    delays = []
    for _ in range(6):
        result = await auth.login("alice@example.test", "guess", remote_ip="127.0.0.1")
        assert not result.ok and not result.throttled
        delays.append(result.delay)
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0]  # free, free, then doubling up to throttle_max_delay
    assert sleeps == [0.5, 1.0, 2.0, 4.0]

    # Locked: even the right password is refused without being checked, from this IP and for this user.
    locked = await auth.login("alice@example.test", PASSWORD, remote_ip="127.0.0.1")
    assert locked.throttled and not locked.ok
    other_ip = await auth.login("alice@example.test", PASSWORD, remote_ip="198.51.100.7")
    assert other_ip.throttled
    other_user = await auth.login("bob@example.test", PASSWORD, remote_ip="127.0.0.1")
    assert other_user.throttled

    # The failures age out of the window.
    clock.now += 601
    result = await auth.login("alice@example.test", PASSWORD, remote_ip="127.0.0.1")
    assert result.ok and result.delay == 0.0


async def test_success_resets_the_counts(tmp_path: Path, stored_hash: str) -> None:
    rt = _runtime(tmp_path, stored_hash, throttle_free_failures=1, throttle_lockout_failures=3)
    auth = _auth(rt, Clock(), [])
    await auth.login("alice@example.test", "bad", remote_ip="192.0.2.9")
    second = await auth.login("alice@example.test", "bad", remote_ip="192.0.2.9")
    assert second.delay == 0.5
    third = await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.9")
    assert third.ok and third.delay == 1.0
    after = await auth.login("alice@example.test", "bad", remote_ip="192.0.2.9")
    assert after.delay == 0.0 and not after.throttled


async def test_unknown_users_are_throttled_by_ip(tmp_path: Path, stored_hash: str) -> None:
    rt = _runtime(tmp_path, stored_hash, throttle_free_failures=0, throttle_lockout_failures=3)
    auth = _auth(rt, Clock(), [])
    for name in ("a", "b", "c"):
        assert not (await auth.login(f"{name}@example.test", "x", remote_ip="2001:db8:1:2::5")).throttled
    # Another address in the same IPv6 /64 shares the count.
    result = await auth.login("alice@example.test", PASSWORD, remote_ip="2001:db8:1:2:ffff::1")
    assert result.throttled
    result = await auth.login("alice@example.test", PASSWORD, remote_ip="2001:db8:1:3::1")
    assert result.ok


async def test_reload_of_settings_takes_effect(tmp_path: Path, stored_hash: str) -> None:
    rt = _runtime(tmp_path, stored_hash, throttle_lockout_failures=2)
    auth = _auth(rt, Clock(), [])
    for _ in range(2):
        await auth.login("alice@example.test", "x", remote_ip="192.0.2.1")
    assert (await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.1")).throttled
    (tmp_path / "again").mkdir()
    rt.config = _runtime(tmp_path / "again", stored_hash, throttle_lockout_failures=5).config
    assert (await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.1")).ok


async def test_repeated_logins_hit_the_cache_and_a_new_password_misses_it(
    tmp_path: Path, stored_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = _runtime(tmp_path, stored_hash)
    auth = _auth(rt, Clock(), [])
    calls: list[str] = []
    real = authenticator_module.verify_password

    def counting(stored: str, password: str) -> bool:
        calls.append(password)
        return real(stored, password)

    monkeypatch.setattr(authenticator_module, "verify_password", counting)
    for _ in range(5):
        assert (await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.1")).ok
    assert len(calls) == 1
    assert not (await auth.login("alice@example.test", PASSWORD + "!", remote_ip="192.0.2.1")).ok
    assert len(calls) == 2
    # An unknown user costs a check too (against a decoy), so timing does not tell which accounts exist.
    assert not (await auth.login("nobody@example.test", PASSWORD, remote_ip="192.0.2.1")).ok
    assert len(calls) == 3
    # Changing the password changes the stored hash: the old password no longer works.
    (tmp_path / "users").write_text(f"alice@example.test:{{PLAIN}}new-one\nbob@example.test:{stored_hash}\n")
    rt.directory = Directory.load(load_config(tmp_path / "kinmail.toml"))
    assert not (await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.1")).ok
    assert (await auth.login("alice@example.test", "new-one", remote_ip="192.0.2.1")).ok


async def test_logs_name_user_and_ip_but_never_the_password(
    tmp_path: Path, stored_hash: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = _auth(_runtime(tmp_path, stored_hash), Clock(), [])
    with caplog.at_level(logging.INFO):
        await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.1", service="imap")
        await auth.login("alice@example.test", "wrong-guess-123", remote_ip="192.0.2.1", service="pop3")
    text = caplog.text
    assert "event=auth.ok user=alice@example.test ip=192.0.2.1 service=imap" in text
    assert "event=auth.fail user=alice@example.test ip=192.0.2.1 service=pop3" in text
    assert PASSWORD not in text and "wrong-guess-123" not in text


def test_throttle_counts_and_ip_keys() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    limits = Limits(free_failures=1, max_delay=10, lockout_failures=3, window=60)
    keys = ["ip:192.0.2.1"]
    assert throttle.delay(keys, limits) == 0
    throttle.fail(keys, limits)
    throttle.fail(keys, limits)
    assert throttle.delay(keys, limits) == 1.0
    throttle.fail(keys, limits)
    assert throttle.locked(keys, limits)
    clock.now += 30
    throttle.fail(keys, limits)
    clock.now += 31  # the first three have aged out
    assert throttle.failures(keys, limits) == 1
    assert ip_key("::ffff:192.0.2.1") == "ip:192.0.2.1"
    assert ip_key("2001:db8::1") == ip_key("[2001:db8::ffff:1]") == "ip:2001:db8::/64"


async def test_failures_survive_a_restart_and_still_age_out(tmp_path: Path, stored_hash: str) -> None:
    rt = _runtime(tmp_path, stored_hash, throttle_free_failures=1, throttle_lockout_failures=3)
    clock = Clock()
    first = _auth(rt, clock, [])
    for _ in range(3):
        await first.login("alice@example.test", "bad", remote_ip="192.0.2.5")
    assert (await first.login("alice@example.test", PASSWORD, remote_ip="192.0.2.5")).throttled
    first.throttle.close()
    assert (rt.data_dir / "state" / "auth.sqlite").is_file()

    # A new process (a new Authenticator over the same data folder) still knows the failures...
    second = _auth(rt, clock, [])
    assert (await second.login("alice@example.test", PASSWORD, remote_ip="198.51.100.1")).throttled
    assert (await second.login("bob@example.test", PASSWORD, remote_ip="192.0.2.5")).throttled
    assert (await second.login("bob@example.test", PASSWORD, remote_ip="198.51.100.1")).ok
    second.throttle.close()
    # ...until they leave the window, which a third start also sees.
    clock.now += 901
    third = _auth(rt, clock, [])
    assert (await third.login("alice@example.test", PASSWORD, remote_ip="192.0.2.5")).ok
    third.throttle.close()


async def test_a_success_clears_the_stored_failures_too(tmp_path: Path, stored_hash: str) -> None:
    rt = _runtime(tmp_path, stored_hash, throttle_free_failures=1, throttle_lockout_failures=5)
    clock = Clock()
    first = _auth(rt, clock, [])
    await first.login("alice@example.test", "bad", remote_ip="192.0.2.5")
    assert (await first.login("alice@example.test", PASSWORD, remote_ip="192.0.2.5")).delay == 0.5
    first.throttle.close()
    second = _auth(rt, clock, [])
    result = await second.login("alice@example.test", "bad", remote_ip="192.0.2.5")
    assert result.delay == 0.0 and not result.ok
    second.throttle.close()


async def test_an_unusable_state_file_only_costs_persistence(
    tmp_path: Path, stored_hash: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = _runtime(tmp_path, stored_hash, throttle_lockout_failures=2)
    (rt.data_dir / "state").mkdir(parents=True)
    (rt.data_dir / "state" / "auth.sqlite").mkdir()  # a folder where the file should be
    auth = _auth(rt, Clock(), [])
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            assert not (await auth.login("alice@example.test", "bad", remote_ip="192.0.2.5")).ok
        assert (await auth.login("alice@example.test", PASSWORD, remote_ip="192.0.2.5")).throttled
    assert "event=auth.state_unavailable" in caplog.text
