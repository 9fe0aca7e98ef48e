"""The `vnd.dovecot.testsuite` extension: the commands the Pigeonhole test scripts (`.svtest`) use to set a
message and envelope, compile and run sub-scripts, execute results into an in-memory mail store and outbox,
and assert on errors, actions and produced messages.

Enabled only when a caller passes `TESTSUITE` in the extensions of `compile_script` — which `run_svtest` here
does and nothing else (ManageSieve and delivery use the default list, which lacks it). Used by the test
runner in tests/. Everything it stores lives in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from kinmail.sieve import TESTSUITE, Script, SieveError, compile_script
from kinmail.sieve.errors import SieveRuntimeError
from kinmail.sieve.interp import Interpreter, Stop
from kinmail.sieve.message import SieveMessage, parse_addresses
from kinmail.sieve.notify import build_notification
from kinmail.sieve.report import build_report
from kinmail.sieve.result import (
    DiscardAction,
    Envelope,
    FileIntoAction,
    Host,
    KeepAction,
    NotifyAction,
    RedirectAction,
    RejectAction,
    ReportAction,
    SieveResult,
    VacationAction,
    action_name,
    canonical_folder,
)
from kinmail.sieve.spamtest import ScoreConfig
from kinmail.sieve.spec import EXTENSIONS
from kinmail.sieve.syntax import Node
from kinmail.sieve.vacation import VacationPolicy, build_reply, skip_reason

ALL_EXTENSIONS = frozenset((*EXTENSIONS, TESTSUITE))


class TestFailure(Exception):
    """test_fail: ends the current `test` block."""


class SuiteHost(Host):
    """The world of a test script: mailboxes in memory, metadata, lists and settings from test_config_set."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.config: dict[str, str] = {}
        self.spam_config = ScoreConfig()
        self.virus_config = ScoreConfig()
        self.seen: dict[str, float] = {}
        self.debug: list[str] = []
        self.username = "testuser"

    def include(self, name: str, personal: bool) -> str | None:
        folder = self.suite.dir / ("included" if personal else "included-global")
        path = folder / f"{name}.sieve"
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return None

    def mailbox_exists(self, name: str) -> bool:
        return name in self.suite.mailboxes

    def metadata(self, mailbox: str | None, name: str) -> str | None:
        return self.suite.metadata.get((mailbox, name))

    def list_valid(self, name: str) -> bool:
        from kinmail.sieve.checks import list_name

        return list_name(name) in self.suite.lists

    def list_contains(self, name: str, value: str) -> bool:
        return value.lower() in self.suite.lists.get(name, set())

    def list_members(self, name: str) -> list[str]:
        return sorted(self.suite.lists.get(name, set()))

    def editheader_allowed(self, name: str, operation: str) -> bool:
        c = self.config
        lname = name.lower()
        if lname in ("received", "auto-submitted"):
            return operation == "add"
        if lname == "subject":
            return True  # RFC 5293 §7: Subject is there to be edited; configuration cannot protect it
        for item in c.get("sieve_editheader_header", "").split():
            if item.lower() == lname:
                forbid = c.get(f"sieve_editheader_header/{item}/forbid_{operation}", "no")
                if forbid == "yes":
                    return False
        return True

    def namespace_value(self, parts: tuple[str, ...]) -> str | None:
        if parts == ("tst", "path"):
            return str(self.suite.dir)
        if parts == ("tst", "name"):
            return self.suite.path.stem
        return None

    def duplicate(self, key: str, seconds: int, last: bool) -> bool:
        return key in self.seen

    def duplicate_commit(self, key: str, seconds: int) -> None:
        self.seen[key] = float(seconds)

    def environment(self) -> dict[str, str]:
        items = {
            "domain": "example.com",
            "host": "mail.example.com",
            "location": "MDA",
            "name": "kinmail",
            "phase": "during",
            "version": "1",
        }
        for key, value in self.config.items():
            if key.startswith("sieve_environment/"):
                items["vnd.dovecot.config." + key.split("/", 1)[1].lower()] = value
        return items

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def debug_log(self, message: str) -> None:
        self.debug.append(message)

    def warning(self, message: str) -> None:
        self.suite.errors.append(message)

    def reload(self) -> None:
        c = self.config
        self.max_redirects = int(c.get("sieve_max_redirects", "4") or 4)
        self.max_actions = int(c.get("sieve_max_actions", "32") or 32)
        self.delimiter = c.get("recipient_delimiter", "+") or "+"
        self.editheader_max_size = int(c.get("sieve_editheader_max_header_size", "2048") or 2048)
        self.max_notifications = int(c.get("sieve_notify_max_notifications", "10") or 0)
        self.max_variable_size = int(
            c.get("sieve_variables_max_value_size") or c.get("sieve_variables_max_variable_size") or 4096
        )
        self.suite.lists = _load_lists(c)
        self.spam_config = _score_config(c, "spamtest")
        self.virus_config = _score_config(c, "virustest")


def _load_lists(c: dict[str, str]) -> dict[str, set[str]]:
    """extlists lists from `sieve_extlists_list` settings, each backed by a dict file whose keys are
    `priv/sieve/extlists/VALUE` lines followed by a value line."""
    lists: dict[str, set[str]] = {}
    for name in c.get("sieve_extlists_list", "").split():
        members: set[str] = set()
        path = c.get(f"sieve_extlists_list/{name}/dict/file/path")
        if path:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError:
                lines = []
            for line in lines[0::2]:
                if line.startswith("priv/sieve/extlists/"):
                    members.add(line[len("priv/sieve/extlists/") :].lower())
        lists[name] = members
    return lists


def _score_config(c: dict[str, str], prefix: str) -> ScoreConfig:
    header = c.get(f"sieve_{prefix}_status_header", "")
    kind = c.get(f"sieve_{prefix}_status_type", "score") or "score"
    max_value = c.get(f"sieve_{prefix}_score_max_value") or c.get(f"sieve_{prefix}_max_value")
    max_header = c.get(f"sieve_{prefix}_score_max_header", "") or c.get(f"sieve_{prefix}_max_header", "")
    texts = {}
    for key, value in c.items():
        if key.startswith(f"sieve_{prefix}_text_value/"):
            texts[int(key.rsplit("/", 1)[1])] = value
    return ScoreConfig(header, kind, float(max_value) if max_value else None, max_header, texts)


class Suite:
    """One `.svtest` file and its state while it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = path.parent
        self.failures: list[str] = []
        self.tests: list[str] = []
        self.errors: list[str] = []
        self.compiled: Script | None = None
        self.binaries: dict[str, Script] = {}
        self.mailboxes: dict[str, list[tuple[bytes, tuple[str, ...]]]] = {"INBOX": []}
        self.outbox: list[tuple[str, str, bytes]] = []
        self.metadata: dict[tuple[str | None, str], str] = {}
        self.lists: dict[str, set[str]] = {}
        self.host = SuiteHost(self)
        self.main: Interpreter | None = None
        self.commands: dict[str, Callable[[Interpreter, Node], bool]] = {
            "test": self.cmd_test,
            "test_fail": self.cmd_fail,
            "test_set": self.cmd_set,
            "test_config_set": self.cmd_config_set,
            "test_config_unset": self.cmd_config_unset,
            "test_config_reload": self.cmd_noop,
            "test_result_reset": self.cmd_result_reset,
            "test_result_print": self.cmd_noop,
            "test_mailbox_create": self.cmd_mailbox_create,
            "test_binary_save": self.cmd_binary_save,
            "test_binary_load": self.cmd_binary_load,
            "test_imap_metadata_set": self.cmd_metadata_set,
            "test_message": self.cmd_message,
        }
        self.tests_: dict[str, Callable[[Interpreter, Node], bool]] = {
            "test_message": self.test_message,
            "test_script_compile": self.test_script_compile,
            "test_script_run": self.test_script_run,
            "test_multiscript": self.test_multiscript,
            "test_error": self.test_error,
            "test_result_action": self.test_result_action,
            "test_result_execute": self.test_result_execute,
        }

    # running ----------------------------------------------------------------------------------------------

    def run(self) -> list[str]:
        """Run the file; returns the failures (empty when every test passed)."""
        text = self.path.read_text(encoding="utf-8")
        try:
            script = compile_script(text, extensions=ALL_EXTENSIONS, name=self.path.stem)
        except SieveError as exc:
            return [
                f"{self.path.name} does not compile: "
                + "; ".join(f"{ln}:{c}: {m}" for ln, c, m in exc.errors)
            ]
        self.host.reload()
        interp = self._interpreter(
            SieveMessage(b"From: sender@example.com\r\nTo: recipient@example.com\r\n\r\n")
        )
        self.main = interp
        try:
            interp.run(script)
        except TestFailure as exc:
            self.failures.append(f"(outside a test): {exc}")
        except SieveRuntimeError as exc:
            self.failures.append(f"runtime error outside a test: {exc}")
        if not self.tests and not self.failures:
            self.failures.append("no test was run")
        return self.failures

    def _interpreter(self, message: SieveMessage, envelope: Envelope | None = None) -> Interpreter:
        interp = Interpreter(
            message,
            envelope or Envelope("sender@example.com", "recipient@example.com"),
            self.host,
            extensions=ALL_EXTENSIONS,
        )
        interp.testsuite = _Tables(self.commands, self.tests_)
        return interp

    # commands ---------------------------------------------------------------------------------------------

    def cmd_noop(self, it: Interpreter, node: Node) -> bool:
        return True

    def cmd_test(self, it: Interpreter, node: Node) -> bool:
        name = it.str1(node.pos[0])
        self.tests.append(name)
        assert node.block is not None
        try:
            it.block(node.block)
        except TestFailure as exc:
            self.failures.append(f"test '{name}': {exc}")
        except SieveRuntimeError as exc:
            self.failures.append(f"test '{name}': runtime error: {exc}")
        except Stop:
            pass
        return True

    def cmd_fail(self, it: Interpreter, node: Node) -> bool:
        raise TestFailure(f"line {node.line}: {it.str1(node.pos[0])}")

    def cmd_set(self, it: Interpreter, node: Node) -> bool:
        name = it.str1(node.pos[0]).lower()
        value = it.str1(node.pos[1])
        main = self.main or it
        if name == "message":
            message = SieveMessage(value.encode("utf-8"))
            envelope = _envelope_from_headers(message)
            for target in {id(main): main, id(it): it}.values():
                self._set_message(target, message)
                target.envelope = Envelope(envelope.sender, envelope.recipient, envelope.recipient, "")
        elif name.startswith("envelope."):
            part = name[9:]
            for target in {id(main): main, id(it): it}.values():
                env = target.envelope
                if part == "from":
                    env.sender = value.strip("<>") if value.strip() in ("<>", "") else value
                elif part == "to":
                    env.recipient = value
                elif part == "orig_to":
                    env.orig_recipient = value
                elif part == "auth":
                    env.auth = value
                else:
                    raise SieveRuntimeError(f"test_set: unknown envelope part '{part}'", node.line)
        else:
            raise SieveRuntimeError(f"test_set: unknown object '{name}'", node.line)
        return True

    def _set_message(self, it: Interpreter, message: SieveMessage) -> None:
        it.message = message
        it.result.message = message

    def cmd_config_set(self, it: Interpreter, node: Node) -> bool:
        self.host.config[it.str1(node.pos[0])] = it.str1(node.pos[1])
        self.host.reload()
        return True

    def cmd_config_unset(self, it: Interpreter, node: Node) -> bool:
        self.host.config.pop(it.str1(node.pos[0]), None)
        self.host.reload()
        return True

    def cmd_result_reset(self, it: Interpreter, node: Node) -> bool:
        main = self.main or it
        main.result = SieveResult(main.message)
        main.internal_flags = []
        self.outbox.clear()
        return True

    def cmd_mailbox_create(self, it: Interpreter, node: Node) -> bool:
        self.mailboxes.setdefault(canonical_folder(it.str1(node.pos[0])), [])
        return True

    def cmd_binary_save(self, it: Interpreter, node: Node) -> bool:
        if self.compiled is not None:
            self.binaries[it.str1(node.pos[0])] = self.compiled
        return True

    def cmd_binary_load(self, it: Interpreter, node: Node) -> bool:
        script = self.binaries.get(it.str1(node.pos[0]))
        if script is None:
            raise TestFailure(f"line {node.line}: no saved binary '{it.str1(node.pos[0])}'")
        self.compiled = script
        return True

    def cmd_metadata_set(self, it: Interpreter, node: Node) -> bool:
        mailbox = it.tag_str(node, "mailbox")
        self.metadata[(mailbox, it.str1(node.pos[0]))] = it.str1(node.pos[1])
        return True

    def cmd_message(self, it: Interpreter, node: Node) -> bool:
        if not self.test_message(it, node):
            raise TestFailure(f"line {node.line}: test_message: no such message")
        return True

    # tests ------------------------------------------------------------------------------------------------

    def test_message(self, it: Interpreter, node: Node) -> bool:
        index = int(node.pos[0].value)  # type: ignore[arg-type]
        main = self.main or it
        if "smtp" in node.tags:
            if index >= len(self.outbox):
                return False
            sender, recipient, data = self.outbox[index]
            message = SieveMessage(data)
            for target in {id(main): main, id(it): it}.values():
                self._set_message(target, message)
                target.envelope = Envelope(sender, recipient, recipient, "")
            return True
        folder = canonical_folder(it.tag_str(node, "folder") or "INBOX")
        box = self.mailboxes.get(folder)
        if box is None or index >= len(box):
            return False
        message = SieveMessage(box[index][0])
        for target in {id(main): main, id(it): it}.values():
            self._set_message(target, message)
            target.internal_flags = list(box[index][1])
        return True

    def _path(self, it: Interpreter, name: str) -> Path:
        return self.dir / name

    def test_script_compile(self, it: Interpreter, node: Node) -> bool:
        name = it.str1(node.pos[0])
        self.errors = []
        try:
            text = self._path(it, name).read_text(encoding="utf-8")
        except OSError as exc:
            self.errors = [f"failed to open script '{name}': {exc.strerror}"]
            self.compiled = None
            return False
        try:
            self.compiled = self._compile(text, Path(name).stem)
        except SieveError as exc:
            merged = sorted(exc.errors + exc.warnings, key=lambda e: e[0])
            self.errors = [m for _, _, m in merged] + ["script failed to compile"]
            self.compiled = None
            return False
        self.errors = [m for _, _, m in self.compiled.warnings]
        return True

    def _compile(self, text: str, name: str) -> Script:
        c = self.host.config
        return compile_script(
            text,
            extensions=ALL_EXTENSIONS,
            name=name,
            include_loader=self.host.include,
            max_includes=int(c.get("sieve_include_max_includes", "255") or 255),
            max_include_depth=int(c.get("sieve_include_max_nesting_depth", "10") or 10),
            options={
                "max_notifications": self.host.max_notifications,
                "lists": set(self.lists),
                "editheader_max_header_size": self.host.editheader_max_size,
            },
        )

    def test_script_run(self, it: Interpreter, node: Node) -> bool:
        main = self.main or it
        self.errors = []
        if self.compiled is None:
            self.errors = ["no compiled script"]
            return False
        result = main.result if "append_result" in node.tags else SieveResult(main.message)
        sub = self._interpreter(main.message, main.envelope)
        sub.result = result
        try:
            sub.run(self.compiled)
        except SieveRuntimeError as exc:
            self.errors = [exc.message]
            main.result = result
            return False
        main.result = sub.result
        main.internal_flags = sub.internal_flags
        return True

    def test_multiscript(self, it: Interpreter, node: Node) -> bool:
        main = self.main or it
        self.errors = []
        result = SieveResult(main.message)
        sub = self._interpreter(main.message, main.envelope)
        sub.result = result
        for name in it.strs(node.pos[0]):
            try:
                script = self._compile(self._path(it, name).read_text(encoding="utf-8"), Path(name).stem)
            except (OSError, SieveError) as exc:
                self.errors.append(str(exc))
                return False
            try:
                sub.run(script)
            except SieveRuntimeError as exc:
                self.errors.append(exc.message)
                return False
            if sub.stopped:
                break
        main.result = result
        return self.execute(sub)

    @staticmethod
    def _match_indexed(it: Interpreter, node: Node, values: list[str]) -> bool:
        """Match the key list against `values`, or only against the one `:index N` names (from 1)."""
        index = it.tag_num(node, "index")
        if index is not None:
            if index < 1 or index > len(values):
                return False
            values = [values[index - 1]]
        return it.match(node, values, node.pos[0])

    def test_error(self, it: Interpreter, node: Node) -> bool:
        return self._match_indexed(it, node, list(self.errors))

    def test_result_action(self, it: Interpreter, node: Node) -> bool:
        main = self.main or it
        values = [
            action_name(a) if not isinstance(a, FileIntoAction) else "store" for a in main.result.actions
        ]
        return self._match_indexed(it, node, values)

    def test_result_execute(self, it: Interpreter, node: Node) -> bool:
        main = self.main or it
        main.result.keep_flags = tuple(main.internal_flags) if main is it else main.result.keep_flags
        return self.execute(main)

    # executing a result -----------------------------------------------------------------------------------

    def execute(self, it: Interpreter) -> bool:
        self.errors = []
        result = it.result
        data = result.message.to_bytes()
        env = it.envelope
        ok = True
        attachment = "$HasAttachment" if _has_attachment(result.message) else "$HasNoAttachment"
        actions = result.final_actions()
        done = result.executed
        result.executed = len(result.actions)
        for action in actions[done:]:
            if (
                isinstance(action, (KeepAction, FileIntoAction, RedirectAction))
                and action.snapshot is not None
            ):
                data = action.snapshot
            else:
                data = result.message.to_bytes()
            if isinstance(action, KeepAction):
                self.mailboxes.setdefault("INBOX", []).append((data, (*action.flags, attachment)))
            elif isinstance(action, FileIntoAction):
                folder = canonical_folder(action.folder)
                if "//" in folder or folder.endswith("/") or folder.startswith("/"):
                    self.errors.append(
                        f"failed to store into mailbox '{action.folder}': Invalid mailbox name"
                    )
                    ok = False
                    continue
                box = self.mailboxes.get(folder)
                if box is None:
                    if not action.create:
                        self.errors.append(
                            f"failed to store into mailbox '{action.folder}': Mailbox doesn't exist: {action.folder}"
                        )
                        ok = False
                        continue
                    box = self.mailboxes[folder] = []
                box.append((data, (*action.flags, attachment)))
            elif isinstance(action, RedirectAction):
                user = self.host.config.get("sieve_user_email") or env.recipient
                if self._redirect_loop(result.message, user, env.recipient):
                    continue
                sender = self._redirect_sender(env)
                header = f"X-Sieve-Redirected-From: {user}\r\n".encode()
                self.outbox.append((sender, action.address, header + data))
            elif isinstance(action, RejectAction):
                if env.sender:
                    body = (
                        f"From: Postmaster <postmaster@example.com>\r\nTo: <{env.sender}>\r\n"
                        f"Subject: Rejected: {(result.message.header('subject') or [''])[0]}\r\n"
                        "Auto-Submitted: auto-replied (rejected)\r\n\r\n"
                        f"{action.reason}\r\n"
                    )
                    self.outbox.append(("", env.sender, body.encode("utf-8")))
            elif isinstance(action, VacationAction):
                self._vacation(it, action)
            elif isinstance(action, NotifyAction):
                user = self.host.config.get("sieve_user_email") or env.recipient
                note = build_notification(result.message, env, action, user, hostname="example.com")
                if note is not None:
                    how = self.host.config.get("sieve_notify_mailto_envelope_from", "").strip()
                    if not env.sender:
                        sender = ""
                    elif how == "sender":
                        sender = env.sender
                    elif how == "recipient":
                        sender = env.recipient
                    elif how == "user_email":
                        sender = self.host.config.get("sieve_user_email") or env.recipient
                    else:
                        sender = action.from_ or "postmaster@example.com"
                    for rcpt in note[0]:
                        self.outbox.append((sender, rcpt, note[1]))
            elif isinstance(action, ReportAction):
                self._report(it, action)
            elif isinstance(action, DiscardAction):
                pass
        if not ok and not any(isinstance(a, KeepAction) for a in actions[done:]):
            # RFC 5228 §2.10.6: when carrying out the result fails, keep the message as it arrived
            self.mailboxes.setdefault("INBOX", []).append((result.message.original, (attachment,)))
        for key, seconds in result.duplicates:
            self.host.duplicate_commit(key, seconds)
        return ok

    @staticmethod
    def _redirect_loop(message: SieveMessage, *names: str) -> bool:
        mine = {n.lower() for n in names if n}
        return any(
            a.all.lower() in mine
            for v in message.raw_values("x-sieve-redirected-from")
            for a in parse_addresses(v)
        )

    def _redirect_sender(self, env: Envelope) -> str:
        how = self.host.config.get("sieve_redirect_envelope_from", "sender").strip()
        if not env.sender:
            return ""
        if how == "user_email":
            return self.host.config.get("sieve_user_email") or env.recipient
        if how == "recipient":
            return env.recipient
        if how == "orig_recipient":
            return env.orig_recipient or env.recipient
        if how.startswith("<") and how.endswith(">"):
            return how[1:-1]
        return env.sender

    def _report(self, it: Interpreter, action: ReportAction) -> None:
        env = it.envelope
        how = self.host.config.get("sieve_report_from", "").strip()
        sender = {
            "sender": env.sender,
            "recipient": env.recipient,
            "orig_recipient": env.orig_recipient or env.recipient,
            "user_email": self.host.config.get("sieve_user_email") or env.recipient,
        }.get(how) or (how[1:-1] if how.startswith("<") and how.endswith(">") else "postmaster@example.com")
        data = build_report(
            it.result.message,
            env,
            action.feedback_type,
            action.message,
            f"<{sender}>",
            action.address,
            headers_only=action.headers_only,
            hostname="example.com",
            user=self.host.config.get("sieve_user_email") or env.recipient,
        )
        self.outbox.append(("", action.address, data))

    def _vacation(self, it: Interpreter, action: VacationAction) -> None:
        env = it.envelope
        c = self.host.config
        user = c.get("sieve_user_email") or env.recipient
        mine = [user, env.recipient]
        if c.get("sieve_vacation_use_original_recipient", "no") == "yes":
            mine.append(env.orig_recipient)
        policy = VacationPolicy(
            check_recipient=c.get("sieve_vacation_check_recipient", "yes") != "no",
            subject_template=c.get("sieve_vacation_default_subject_template") or "Auto: %{subject}",
            default_subject=c.get("sieve_vacation_default_subject") or "Automated reply",
            to_header_ignore_envelope=c.get("sieve_vacation_to_header_ignore_envelope", "no") == "yes",
        )
        if skip_reason(it.result.message, env, action, mine, policy):
            return
        to, data = build_reply(
            it.result.message, env, action, user, hostname="example.com", policy=policy, my_addresses=mine
        )
        sender = env.recipient if c.get("sieve_vacation_send_from_recipient", "no") == "yes" else ""
        self.outbox.append((sender, to, data))


def _first_address(message: SieveMessage, names: tuple[str, ...], default: str) -> str:
    for name in names:
        for value in message.header(name):
            for address in parse_addresses(value):
                if address.domain:
                    return address.all
    return default


def _envelope_from_headers(message: SieveMessage) -> Envelope:
    """The envelope a test message implies: sender from Return-Path, Sender or From; recipient from
    Envelope-To or To (the test scripts rely on this)."""
    sender = _first_address(message, ("return-path", "sender", "from"), "sender@example.com")
    recipient = _first_address(message, ("envelope-to", "to"), "recipient@example.com")
    return Envelope(sender, recipient, recipient, "")


def _has_attachment(message: SieveMessage) -> bool:
    """What an attachment-detecting store notes as $HasAttachment: a part with a Content-Disposition of
    attachment, or a non-text leaf part."""
    for part in message.mime.walk():
        if part.is_multipart():
            continue
        if str(part.get("content-disposition", "")).lower().startswith("attachment"):
            return True
    return False


class _Tables:
    def __init__(
        self,
        commands: dict[str, Callable[[Interpreter, Node], bool]],
        tests: dict[str, Callable[[Interpreter, Node], bool]],
    ) -> None:
        self.commands = commands
        self.tests = tests


def run_svtest(path: Path) -> list[str]:
    """Run one `.svtest` file; returns its failures (empty: every test passed)."""
    return Suite(path).run()
