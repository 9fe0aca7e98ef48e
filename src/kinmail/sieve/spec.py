"""The Sieve language as data: every command and test we know, with its tagged and positional arguments and
the extension (`require` capability) it needs.

Read by `kinmail.sieve.validate`; adding a command means adding a `CommandSpec` here and its behaviour in the
interpreter. RFC numbers name where each comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Value kinds for tags and positional arguments.
STRING = "string"
STRLIST = "strlist"
NUMBER = "number"


@dataclass(frozen=True, slots=True)
class TagSpec:
    name: str
    value: str | None = None  # kind of the value that follows the tag
    group: str | None = None  # tags of one group exclude each other
    ext: str | None = None  # capability the tag needs
    expand: bool = True  # string value subject to variable expansion


@dataclass(frozen=True, slots=True)
class PosSpec:
    label: str
    kind: str  # STRING, STRLIST (a single string is accepted) or NUMBER
    expand: bool = True


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    test: bool
    ext: str | None = None
    tags: tuple[TagSpec, ...] = ()
    pos: tuple[PosSpec, ...] = ()
    min_pos: int | None = None  # optional leading positionals: the first len(pos)-min_pos may be missing
    block: bool = False
    subtests: str = "none"  # "none", "one", "list"
    both: bool = False  # usable as a command and as a test
    data: dict[str, object] = field(default_factory=dict)


COMPARATOR = (TagSpec("comparator", STRING, "comparator", expand=False),)
MATCH = (
    TagSpec("is", group="match"),
    TagSpec("contains", group="match"),
    TagSpec("matches", group="match"),
    TagSpec("value", STRING, "match", "relational", expand=False),
    TagSpec("count", STRING, "match", "relational", expand=False),
    TagSpec("regex", group="match", ext="regex"),
    TagSpec("list", group="match", ext="extlists"),
)
ADDRESS_PART = (
    TagSpec("all", group="addrpart"),
    TagSpec("localpart", group="addrpart"),
    TagSpec("domain", group="addrpart"),
    TagSpec("user", group="addrpart", ext="subaddress"),
    TagSpec("detail", group="addrpart", ext="subaddress"),
)
INDEX = (TagSpec("index", NUMBER, ext="index"), TagSpec("last", ext="index"))
MIME_OPTS = (
    TagSpec("mime", ext="mime"),
    TagSpec("anychild", ext="mime"),
    TagSpec("type", group="mimeopt", ext="mime"),
    TagSpec("subtype", group="mimeopt", ext="mime"),
    TagSpec("contenttype", group="mimeopt", ext="mime"),
    TagSpec("param", STRLIST, "mimeopt", ext="mime"),
)
MATCHING = COMPARATOR + MATCH
FLAGS = (TagSpec("flags", STRLIST, ext="imap4flags"),)
MODIFIERS = tuple(
    TagSpec(m, group=None, ext=e)
    for m, e in (
        ("lower", None),
        ("upper", None),
        ("lowerfirst", None),
        ("upperfirst", None),
        ("quotewildcard", None),
        ("quoteregex", "regex"),
        ("encodeurl", "enotify"),
        ("length", None),
    )
)

KEYS = PosSpec("key list", STRLIST)


TS = "vnd.dovecot.testsuite"
TESTSUITE_SPECS = [
    CommandSpec("test", False, TS, pos=(PosSpec("test name", STRING),), block=True),
    CommandSpec("test_fail", False, TS, pos=(PosSpec("reason", STRING),)),
    CommandSpec("test_set", False, TS, pos=(PosSpec("object", STRING), PosSpec("value", STRING))),
    CommandSpec("test_config_set", False, TS, pos=(PosSpec("setting", STRING), PosSpec("value", STRING))),
    CommandSpec("test_config_unset", False, TS, pos=(PosSpec("setting", STRING),)),
    CommandSpec("test_config_reload", False, TS, tags=(TagSpec("extension", STRING),)),
    CommandSpec("test_result_reset", False, TS),
    CommandSpec("test_result_print", False, TS),
    CommandSpec("test_mailbox_create", False, TS, pos=(PosSpec("mailbox", STRING),)),
    CommandSpec("test_binary_save", False, TS, pos=(PosSpec("name", STRING),)),
    CommandSpec("test_binary_load", False, TS, pos=(PosSpec("name", STRING),)),
    CommandSpec(
        "test_imap_metadata_set",
        False,
        TS,
        tags=(TagSpec("mailbox", STRING),),
        pos=(PosSpec("annotation", STRING), PosSpec("value", STRING)),
    ),
    CommandSpec(
        "test_message",
        True,
        TS,
        tags=(TagSpec("smtp", group="source"), TagSpec("folder", STRING, "source")),
        pos=(PosSpec("index", NUMBER),),
        both=True,
    ),
    CommandSpec("test_script_compile", True, TS, pos=(PosSpec("script", STRING),)),
    CommandSpec("test_script_run", True, TS, tags=(TagSpec("append_result"),)),
    CommandSpec("test_multiscript", True, TS, pos=(PosSpec("scripts", STRLIST),)),
    CommandSpec("test_error", True, TS, tags=(*MATCHING, TagSpec("index", NUMBER)), pos=(KEYS,)),
    CommandSpec("test_result_action", True, TS, tags=(*MATCHING, TagSpec("index", NUMBER)), pos=(KEYS,)),
    CommandSpec("test_result_execute", True, TS),
]


def _c(name: str, *, test: bool = False, **kw: object) -> CommandSpec:
    return CommandSpec(name, test, **kw)  # type: ignore[arg-type]


SPECS: dict[str, CommandSpec] = {
    s.name: s
    for s in [
        # RFC 5228 control commands
        _c("require", pos=(PosSpec("capabilities", STRLIST, expand=False),)),
        _c("if", block=True, subtests="one"),
        _c("elsif", block=True, subtests="one"),
        _c("else", block=True),
        _c("stop"),
        # RFC 5228 actions
        _c("keep", tags=FLAGS),
        _c("discard"),
        _c(
            "redirect",
            tags=(TagSpec("copy", ext="copy"), TagSpec("list", ext="extlists")),
            pos=(PosSpec("address", STRING),),
        ),
        _c(
            "fileinto",
            ext="fileinto",
            tags=(
                TagSpec("copy", ext="copy"),
                TagSpec("create", ext="mailbox"),
                TagSpec("specialuse", STRING, ext="special-use"),
                *FLAGS,
            ),
            pos=(PosSpec("folder", STRING),),
        ),
        # RFC 5228 tests
        _c("true", test=True),
        _c("false", test=True),
        _c("not", test=True, subtests="one"),
        _c("allof", test=True, subtests="list"),
        _c("anyof", test=True, subtests="list"),
        _c(
            "address",
            test=True,
            tags=ADDRESS_PART + MATCHING + INDEX + MIME_OPTS,
            pos=(PosSpec("header list", STRLIST), KEYS),
        ),
        _c(
            "envelope",
            test=True,
            ext="envelope",
            tags=ADDRESS_PART + MATCHING,
            pos=(PosSpec("envelope part", STRLIST), KEYS),
        ),
        _c("exists", test=True, tags=MIME_OPTS, pos=(PosSpec("header names", STRLIST),)),
        _c(
            "header",
            test=True,
            tags=MATCHING + INDEX + MIME_OPTS,
            pos=(PosSpec("header names", STRLIST), KEYS),
        ),
        _c(
            "size",
            test=True,
            tags=(TagSpec("over", group="size"), TagSpec("under", group="size")),
            pos=(PosSpec("limit", NUMBER),),
        ),
        # RFC 5429
        _c("reject", ext="reject", pos=(PosSpec("reason", STRING),)),
        _c("ereject", ext="ereject", pos=(PosSpec("reason", STRING),)),
        # RFC 5232
        _c(
            "setflag",
            ext="imap4flags",
            pos=(PosSpec("variable name", STRING, False), PosSpec("flags", STRLIST)),
            min_pos=1,
        ),
        _c(
            "addflag",
            ext="imap4flags",
            pos=(PosSpec("variable name", STRING, False), PosSpec("flags", STRLIST)),
            min_pos=1,
        ),
        _c(
            "removeflag",
            ext="imap4flags",
            pos=(PosSpec("variable name", STRING, False), PosSpec("flags", STRLIST)),
            min_pos=1,
        ),
        _c(
            "hasflag",
            test=True,
            ext="imap4flags",
            tags=MATCHING,
            pos=(PosSpec("variable list", STRLIST, False), KEYS),
            min_pos=1,
        ),
        # RFC 5173
        _c(
            "body",
            test=True,
            ext="body",
            tags=(
                *MATCHING,
                TagSpec("raw", group="transform"),
                TagSpec("content", STRLIST, "transform"),
                TagSpec("text", group="transform"),
            ),
            pos=(KEYS,),
        ),
        # RFC 5229
        _c(
            "set",
            ext="variables",
            tags=MODIFIERS,
            pos=(PosSpec("name", STRING, False), PosSpec("value", STRING)),
        ),
        _c("string", test=True, ext="variables", tags=MATCHING, pos=(PosSpec("source", STRLIST), KEYS)),
        # RFC 5230, RFC 6131
        _c(
            "vacation",
            ext="vacation",
            tags=(
                TagSpec("days", NUMBER, "period"),
                TagSpec("seconds", NUMBER, "period", ext="vacation-seconds"),
                TagSpec("subject", STRING),
                TagSpec("from", STRING),
                TagSpec("addresses", STRLIST),
                TagSpec("mime"),
                TagSpec("handle", STRING),
            ),
            pos=(PosSpec("reason", STRING),),
        ),
        # RFC 5260
        _c(
            "date",
            test=True,
            ext="date",
            tags=(TagSpec("zone", STRING, "zone"), TagSpec("originalzone", group="zone"), *MATCHING, *INDEX),
            pos=(PosSpec("header name", STRING), PosSpec("date part", STRING), KEYS),
        ),
        _c(
            "currentdate",
            test=True,
            ext="date",
            tags=(TagSpec("zone", STRING), *MATCHING),
            pos=(PosSpec("date part", STRING), KEYS),
        ),
        # RFC 5490
        _c("mailboxexists", test=True, ext="mailbox", pos=(PosSpec("mailbox names", STRLIST),)),
        _c(
            "metadata",
            test=True,
            ext="mboxmetadata",
            tags=MATCHING,
            pos=(PosSpec("mailbox", STRING), PosSpec("annotation name", STRING), KEYS),
        ),
        _c(
            "metadataexists",
            test=True,
            ext="mboxmetadata",
            pos=(PosSpec("mailbox", STRING), PosSpec("annotation names", STRLIST)),
        ),
        _c(
            "servermetadata",
            test=True,
            ext="servermetadata",
            tags=MATCHING,
            pos=(PosSpec("annotation name", STRING), KEYS),
        ),
        _c(
            "servermetadataexists",
            test=True,
            ext="servermetadata",
            pos=(PosSpec("annotation names", STRLIST),),
        ),
        # RFC 6609
        _c(
            "include",
            ext="include",
            tags=(
                TagSpec("personal", group="location"),
                TagSpec("global", group="location"),
                TagSpec("once"),
                TagSpec("optional"),
            ),
            pos=(PosSpec("script name", STRING),),
        ),
        _c("return", ext="include"),
        _c("global", ext="include", pos=(PosSpec("variable names", STRLIST, False),)),
        # RFC 5183
        _c("environment", test=True, ext="environment", tags=MATCHING, pos=(PosSpec("name", STRING), KEYS)),
        # RFC 7352
        _c(
            "duplicate",
            test=True,
            ext="duplicate",
            tags=(
                TagSpec("handle", STRING),
                TagSpec("header", STRING, "source"),
                TagSpec("uniqueid", STRING, "source"),
                TagSpec("seconds", NUMBER),
                TagSpec("last"),
            ),
        ),
        # RFC 5293
        _c(
            "addheader",
            ext="editheader",
            tags=(TagSpec("last"),),
            pos=(PosSpec("field name", STRING), PosSpec("value", STRING)),
        ),
        _c(
            "deleteheader",
            ext="editheader",
            tags=(TagSpec("index", NUMBER), TagSpec("last"), *MATCHING),
            pos=(PosSpec("field name", STRING), PosSpec("value patterns", STRLIST)),
            data={"optional_last": True},
        ),
        # RFC 5435
        _c(
            "notify",
            ext="enotify",
            tags=(
                TagSpec("from", STRING),
                TagSpec("importance", STRING),
                TagSpec("options", STRLIST),
                TagSpec("message", STRING),
            ),
            pos=(PosSpec("method", STRING),),
        ),
        _c("valid_notify_method", test=True, ext="enotify", pos=(PosSpec("notification uris", STRLIST),)),
        _c(
            "notify_method_capability",
            test=True,
            ext="enotify",
            tags=MATCHING,
            pos=(PosSpec("notification uri", STRING), PosSpec("notification capability", STRING), KEYS),
        ),
        # RFC 5235
        _c(
            "spamtest",
            test=True,
            ext="spamtest",
            tags=(TagSpec("percent", ext="spamtestplus"), *MATCHING),
            pos=(PosSpec("value", STRING),),
        ),
        _c("virustest", test=True, ext="virustest", tags=MATCHING, pos=(PosSpec("value", STRING),)),
        # RFC 6134
        _c("valid_ext_list", test=True, ext="extlists", pos=(PosSpec("ext list names", STRLIST),)),
        # RFC 5463
        _c("ihave", test=True, ext="ihave", pos=(PosSpec("capabilities", STRLIST, False),)),
        _c("error", ext="ihave", pos=(PosSpec("message", STRING),)),
        # RFC 8579
        _c(
            "specialuse_exists",
            test=True,
            ext="special-use",
            pos=(PosSpec("mailbox", STRING), PosSpec("special-use flags", STRLIST)),
            min_pos=1,
        ),
        # RFC 5703
        _c("foreverypart", ext="foreverypart", tags=(TagSpec("name", STRING, expand=False),), block=True),
        _c("break", ext="foreverypart", tags=(TagSpec("name", STRING, expand=False),)),
        _c(
            "extracttext",
            ext="extracttext",
            tags=(*MODIFIERS, TagSpec("first", NUMBER)),
            pos=(PosSpec("variable name", STRING, False),),
        ),
        # vnd.dovecot.report (RFC 5965 abuse reports)
        _c(
            "report",
            ext="vnd.dovecot.report",
            tags=(TagSpec("headers_only"),),
            pos=(PosSpec("feedback type", STRING), PosSpec("message", STRING), PosSpec("address", STRING)),
        ),
        # vnd.dovecot.debug
        _c("debug_log", ext="vnd.dovecot.debug", pos=(PosSpec("message", STRING),)),
        *TESTSUITE_SPECS,
    ]
}

# Capabilities we implement (RFC 5228 §3.2 `require`); "vnd.dovecot.testsuite" only when tests enable it.
EXTENSIONS = (
    "fileinto",
    "envelope",
    "encoded-character",
    "reject",
    "ereject",
    "imap4flags",
    "copy",
    "body",
    "variables",
    "vacation",
    "vacation-seconds",
    "relational",
    "comparator-i;ascii-numeric",
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
    "comparator-i;unicode-casemap",
    "subaddress",
    "regex",
    "date",
    "index",
    "mailbox",
    "mboxmetadata",
    "servermetadata",
    "include",
    "environment",
    "duplicate",
    "editheader",
    "enotify",
    "spamtest",
    "spamtestplus",
    "virustest",
    "extlists",
    "ihave",
    "special-use",
    "foreverypart",
    "mime",
    "extracttext",
    "vnd.dovecot.debug",
    "vnd.dovecot.environment",
    "vnd.dovecot.report",
)

# Capabilities that imply others.
IMPLIES = {
    "spamtestplus": ("spamtest",),
    "vacation-seconds": ("vacation",),
    "vnd.dovecot.environment": ("environment",),
}
