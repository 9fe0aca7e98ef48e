"""The schema of `kinmail.toml` (pydantic v2, unknown keys are errors).

Every key has a default and a description; `docs/configuration.md` is generated from this module and a test
keeps the two in step. Names follow Postfix and Dovecot where they have the same knob.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kinmail.config.validators import (
    Delimiter,
    DomainName,
    Domains,
    Duration,
    HostPort,
    LogLevel,
    NameServer,
    Network,
    PlaintextAuth,
    RelayHost,
    Url,
    listeners_distinct,
)


class Section(BaseModel):
    """A table of `kinmail.toml`: unknown keys are errors, and values must have the documented type
    (no "yes" for true, no "25" for 25)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class Listen(Section):
    """Addresses to listen on, as lists of "host:port" ("[::]:25", "127.0.0.1:2525"); an empty list disables."""

    smtp: list[HostPort] = Field(
        default=["[::]:25"], description="MX: mail from the Internet for our domains"
    )
    submission: list[HostPort] = Field(default=["[::]:587"], description="Submission with STARTTLS and AUTH")
    submissions: list[HostPort] = Field(default=["[::]:465"], description="Submission over implicit TLS")
    imap: list[HostPort] = Field(default=["[::]:143"], description="IMAP with STARTTLS")
    imaps: list[HostPort] = Field(default=["[::]:993"], description="IMAP over implicit TLS")
    pop3: list[HostPort] = Field(default=["[::]:110"], description="POP3 with STLS")
    pop3s: list[HostPort] = Field(default=["[::]:995"], description="POP3 over implicit TLS")
    managesieve: list[HostPort] = Field(default=["[::]:4190"], description="ManageSieve (RFC 5804)")
    http: list[HostPort] = Field(
        default=["[::]:8080"], description="Webmail, settings, admin pages, autoconfig, metrics"
    )

    @model_validator(mode="after")
    def _distinct(self) -> Listen:
        listeners_distinct({name: getattr(self, name) for name in type(self).model_fields})
        return self


class Tls(Section):
    """The certificate for every TLS listener and STARTTLS (paths relative to the config folder)."""

    cert: str = Field(
        default="tls/cert.pem",
        description="PEM certificate chain; made self-signed by `kinmail init` when missing",
    )
    key: str = Field(default="tls/key.pem", description="PEM private key")


class Smtpd(Section):
    """The MX and submission server. Knob names follow Postfix's smtpd."""

    helo_required: bool = Field(default=True, description="Refuse MAIL before HELO/EHLO with 503")
    strict_rfc821_envelopes: bool = Field(
        default=True, description="Refuse paths without <> or with junk after them (501)"
    )
    disable_vrfy_command: bool = Field(default=True, description="Answer VRFY with 502")
    message_size_limit: int = Field(
        default=26214400, ge=0, description="Largest message in bytes (SIZE= and during DATA)"
    )
    mynetworks: list[Network] = Field(
        default=["127.0.0.0/8", "[::1]/128"],
        description="Clients allowed to relay without AUTH (CIDR networks)",
    )
    client_access: str = Field(
        default="", description='Access map on the client address, e.g. "cidr:access.cidr"'
    )
    sender_access: str = Field(default="", description="Access map on the MAIL FROM address")
    recipient_access: str = Field(default="", description="Access map on each RCPT TO address")
    dnsbl: list[DomainName] = Field(
        default=[], description='DNS block lists checked at connect, e.g. ["zen.spamhaus.org"]'
    )
    recipient_limit: int = Field(
        default=1000, ge=1, description="Most recipients in one message (452 past it)"
    )
    line_length_limit: int = Field(default=4096, ge=1000, description="Longest command line in bytes")
    hard_error_limit: int = Field(
        default=20, ge=1, description="Errors in one session before 421 and disconnect"
    )
    timeout: int = Field(default=300, ge=1, description="Seconds a client may stay idle before 421")
    banner: str = Field(default="ESMTP kinmail", description="Text after the host name in the 220 greeting")
    hide_client_in_received: bool = Field(
        default=True,
        description="For authenticated submissions, Received names neither the client's IP nor its HELO",
    )
    reject_sender_login_mismatch: bool = Field(
        default=True,
        description="An authenticated user may send only as one of their own addresses or aliases",
    )
    user_messages_per_hour: int = Field(
        default=500, ge=0, description="Messages one user may submit per hour (0: no limit)"
    )
    user_recipients_per_message: int = Field(
        default=100, ge=1, description="Most recipients of one submitted message (452 4.5.3 past it)"
    )
    pregreet_wait: float = Field(
        default=1.0,
        ge=0,
        le=30,
        description="MX: seconds before the greeting; a client that talks first is dropped",
    )


class Delivery(Section):
    """Outbound delivery, the queue's retry schedule and local delivery. Names follow Postfix."""

    relayhost: RelayHost = Field(
        default="", description='Smarthost for all outbound mail, "[host]:port"; empty: MX lookup'
    )
    relayhost_credentials: str = Field(
        default="", description="Map of relayhost to user:password, e.g. texthash:relay_passwd"
    )
    remote_smtp_port: int = Field(
        default=25, ge=1, le=65535, description="Port of remote MX hosts (tests point it elsewhere)"
    )
    maximal_queue_lifetime: Duration = Field(
        default="5d", description="How long a message is retried before it bounces"
    )
    delay_warning_time: Duration = Field(
        default="4h", description="After this long undelivered, the sender is warned once (0: never)"
    )
    minimal_backoff_time: Duration = Field(
        default="5m", description="First retry delay; doubles up to maximal_backoff_time"
    )
    maximal_backoff_time: Duration = Field(default="1h", description="Longest delay between retries")
    mailbox_command: str = Field(
        default="", description="External command as the local transport (like procmail)"
    )
    recipient_delimiter: Delimiter = Field(
        default="+", description="Separates user and extension in user+tag@domain"
    )


class Dns(Section):
    """The DNS resolver used for MX, SPF, DKIM, DMARC, DNSBL and DANE lookups."""

    nameservers: list[NameServer] = Field(
        default=[], description='Resolvers as "host:port"; empty: the system resolver. Tests use a local one'
    )
    timeout: float = Field(default=5.0, gt=0, description="Seconds per DNS query")


class Imap(Section):
    """The IMAP server (IMAP4rev2 and IMAP4rev1)."""

    plaintext_auth_without_tls: PlaintextAuth = Field(
        default="loopback",
        description='Allow LOGIN/AUTH without TLS: "never", "loopback" (as Dovecot) or "always"',
    )
    max_line_length: int = Field(
        default=65536, ge=1000, description="Longest command line in bytes (literals not counted)"
    )
    max_literal_size: int = Field(
        default=67108864,
        ge=1024,
        description="Largest literal (APPEND) in bytes; also advertised as APPENDLIMIT",
    )
    max_commands_before_login: int = Field(
        default=20, ge=1, description="Commands allowed before authentication"
    )
    idle_timeout: int = Field(
        default=1800, ge=60, description="Seconds an idle client is kept (RFC 9051: at least 30 min)"
    )


class Pop3(Section):
    """The POP3 server."""

    plaintext_auth_without_tls: PlaintextAuth = Field(
        default="loopback",
        description='Allow USER/PASS and AUTH without TLS: "never", "loopback" or "always"',
    )
    max_errors: int = Field(default=10, ge=1, description="Bad commands before the session is closed")
    timeout: int = Field(
        default=600, ge=30, description="Seconds an idle client is kept (RFC 1939: at least 10 min)"
    )


class Auth(Section):
    """Login checks shared by every protocol: throttling of failed logins per client IP and per user. The
    failures are kept in `data_dir/state/auth.sqlite`, so a restart does not lift a lockout."""

    throttle_free_failures: int = Field(
        default=3, ge=0, description="Failed logins per IP or user before delays start"
    )
    throttle_max_delay: float = Field(
        default=15.0, ge=0, description="Longest delay in seconds before a login answer"
    )
    throttle_lockout_failures: int = Field(
        default=20,
        ge=1,
        description="Failures in the window after which logins are refused outright (NO [UNAVAILABLE])",
    )
    throttle_window: int = Field(default=900, ge=1, description="Seconds over which failures are counted")


class Sieve(Section):
    """Sieve filters: the group's scripts (relative to the config folder) and limits for users' scripts."""

    global_script: str = Field(
        default="sieve/global.sieve", description="The group's policy script, run before each user's"
    )
    after_script: str = Field(default="", description="An optional script run after the user's")
    max_script_size: int = Field(default=1048576, ge=1024, description="Largest script a user may upload")
    max_scripts: int = Field(default=20, ge=1, description="Most scripts a user may keep")
    max_redirects: int = Field(default=4, ge=0, description="Most redirect actions one script run may take")
    max_actions: int = Field(
        default=32, ge=1, description="Most actions (fileinto, redirect...) one run may take"
    )
    lists: dict[str, str] = Field(
        default={},
        description='extlists (RFC 6134): list names to map specs, e.g. {approved = "texthash:approved"};'
        ' :list "approved" matches a key the map holds',
    )
    vacation_min_period: int = Field(
        default=86400,
        ge=0,
        description="Shortest interval in seconds between two vacation replies to a sender",
    )
    vacation_max_period: int = Field(
        default=90 * 86400, ge=0, description="Longest interval in seconds between two vacation replies"
    )
    spamtest_header: str = Field(
        default="X-Spam-Score",
        description='Header holding the spam score for spamtest (RFC 5235): "Name" or "Name: regex with one group"',
    )
    spamtest_max: float = Field(
        default=10.0, gt=0, description="The spam score that counts as certainly spam"
    )
    virustest_header: str = Field(
        default="X-Virus-Status", description='Header of the virus check for virustest: "clean" or "infected"'
    )


class Web(Section):
    """Webmail, personal settings, admin pages and autoconfig."""

    base_url: Url = Field(
        default="", description="Public URL of the web interface, e.g. https://mail.example.org/"
    )
    session_lifetime: int = Field(default=86400, ge=300, description="Seconds a webmail login lasts")


class Config(Section):
    """The whole `kinmail.toml`."""

    hostname: DomainName = Field(
        default="localhost", description="This server's name: greeting, HELO, Received, DSNs"
    )
    data_dir: str = Field(
        default="/var/lib/kinmail",
        description="Mail, queue, indexes and state (relative to the config folder)",
    )
    domains: Domains = Field(default=[], description="Domains we receive mail for")
    users_file: str = Field(default="users", description="Accounts, Dovecot passwd-file style")
    aliases_file: str = Field(default="aliases", description="Aliases, a Postfix virtual table")
    log_level: LogLevel = Field(default="info", description='"trace", "debug", "info", "warning" or "error"')
    listen: Listen = Field(default_factory=Listen)
    tls: Tls = Field(default_factory=Tls)
    smtpd: Smtpd = Field(default_factory=Smtpd)
    delivery: Delivery = Field(default_factory=Delivery)
    dns: Dns = Field(default_factory=Dns)
    imap: Imap = Field(default_factory=Imap)
    pop3: Pop3 = Field(default_factory=Pop3)
    auth: Auth = Field(default_factory=Auth)
    sieve: Sieve = Field(default_factory=Sieve)
    web: Web = Field(default_factory=Web)
