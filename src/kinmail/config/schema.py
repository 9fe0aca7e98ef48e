"""The schema of `kinmail.toml` (pydantic v2, unknown keys are errors).

Every key has a default and a description; `docs/configuration.md` is generated from this module and a test
keeps the two in step. Names follow Postfix and Dovecot where they have the same knob.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Listen(Section):
    """Addresses to listen on, as lists of "host:port" ("[::]:25", "127.0.0.1:2525"); an empty list disables."""

    smtp: list[str] = Field(["[::]:25"], description="MX: mail from the Internet for our domains")
    submission: list[str] = Field(["[::]:587"], description="Submission with STARTTLS and AUTH")
    submissions: list[str] = Field(["[::]:465"], description="Submission over implicit TLS")
    imap: list[str] = Field(["[::]:143"], description="IMAP with STARTTLS")
    imaps: list[str] = Field(["[::]:993"], description="IMAP over implicit TLS")
    pop3: list[str] = Field(["[::]:110"], description="POP3 with STLS")
    pop3s: list[str] = Field(["[::]:995"], description="POP3 over implicit TLS")
    managesieve: list[str] = Field(["[::]:4190"], description="ManageSieve (RFC 5804)")
    http: list[str] = Field(["[::]:8080"], description="Webmail, settings, admin pages, autoconfig, metrics")


class Tls(Section):
    cert: str = Field("tls/cert.pem", description="PEM certificate chain; made self-signed by `kinmail init` when missing")
    key: str = Field("tls/key.pem", description="PEM private key")


class Smtpd(Section):
    """The MX and submission server. Knob names follow Postfix's smtpd."""

    helo_required: bool = Field(True, description="Refuse MAIL before HELO/EHLO with 503")
    strict_rfc821_envelopes: bool = Field(True, description="Refuse paths without <> or with junk after them (501)")
    disable_vrfy_command: bool = Field(True, description="Answer VRFY with 502")
    message_size_limit: int = Field(26214400, ge=0, description="Largest message in bytes (SIZE= and during DATA)")
    mynetworks: list[str] = Field(
        ["127.0.0.0/8", "[::1]/128"], description="Clients allowed to relay without AUTH (CIDR networks)"
    )
    client_access: str = Field("", description='Access map on the client address, e.g. "cidr:access.cidr"')
    sender_access: str = Field("", description="Access map on the MAIL FROM address")
    recipient_access: str = Field("", description="Access map on each RCPT TO address")
    dnsbl: list[str] = Field([], description='DNS block lists checked at connect, e.g. ["zen.spamhaus.org"]')
    recipient_limit: int = Field(1000, ge=1, description="Most recipients in one message (452 past it)")
    line_length_limit: int = Field(4096, ge=1000, description="Longest command line in bytes")
    hard_error_limit: int = Field(20, ge=1, description="Errors in one session before 421 and disconnect")
    timeout: int = Field(300, ge=1, description="Seconds a client may stay idle before 421")
    banner: str = Field("ESMTP kinmail", description="Text after the host name in the 220 greeting")
    hide_client_in_received: bool = Field(
        True, description="For authenticated submissions, Received names neither the client's IP nor its HELO"
    )
    reject_sender_login_mismatch: bool = Field(
        True, description="An authenticated user may send only as one of their own addresses or aliases"
    )
    user_messages_per_hour: int = Field(500, ge=0, description="Messages one user may submit per hour (0: no limit)")


class Delivery(Section):
    relayhost: str = Field("", description='Smarthost for all outbound mail, "[host]:port"; empty: MX lookup')
    relayhost_credentials: str = Field("", description="Map of relayhost to user:password, e.g. texthash:relay_passwd")
    remote_smtp_port: int = Field(25, ge=1, le=65535, description="Port of remote MX hosts (tests point it elsewhere)")
    maximal_queue_lifetime: str = Field("5d", description="How long a message is retried before it bounces")
    delay_warning_time: str = Field("4h", description="After this long undelivered, the sender is warned once (0: never)")
    minimal_backoff_time: str = Field("5m", description="First retry delay; doubles up to maximal_backoff_time")
    maximal_backoff_time: str = Field("1h", description="Longest delay between retries")
    mailbox_command: str = Field("", description="External command as the local transport (like procmail)")
    recipient_delimiter: str = Field("+", description="Separates user and extension in user+tag@domain")


class Dns(Section):
    nameservers: list[str] = Field(
        [], description='Resolvers as "host:port"; empty: the system resolver. Tests use a local one'
    )
    timeout: float = Field(5.0, gt=0, description="Seconds per DNS query")


class Imap(Section):
    plaintext_auth_without_tls: str = Field(
        "loopback", description='Allow LOGIN/AUTH without TLS: "never", "loopback" (as Dovecot) or "always"'
    )
    max_line_length: int = Field(65536, ge=1000, description="Longest command line in bytes (literals not counted)")
    max_literal_size: int = Field(
        67108864, ge=1024, description="Largest literal (APPEND) in bytes; also advertised as APPENDLIMIT"
    )
    max_commands_before_login: int = Field(20, ge=1, description="Commands allowed before authentication")
    idle_timeout: int = Field(1800, ge=60, description="Seconds an idle client is kept (RFC 9051: at least 30 min)")


class Pop3(Section):
    plaintext_auth_without_tls: str = Field(
        "loopback", description='Allow USER/PASS and AUTH without TLS: "never", "loopback" or "always"'
    )
    max_errors: int = Field(10, ge=1, description="Bad commands before the session is closed")
    timeout: int = Field(600, ge=30, description="Seconds an idle client is kept (RFC 1939: at least 10 min)")


class Auth(Section):
    throttle_free_failures: int = Field(3, ge=0, description="Failed logins per IP or user before delays start")
    throttle_max_delay: float = Field(15.0, ge=0, description="Longest delay in seconds before a login answer")
    throttle_lockout_failures: int = Field(
        20, ge=1, description="Failures in the window after which logins are refused outright (NO [UNAVAILABLE])"
    )
    throttle_window: int = Field(900, ge=1, description="Seconds over which failures are counted")


class Sieve(Section):
    global_script: str = Field("sieve/global.sieve", description="The group's policy script, run before each user's")
    after_script: str = Field("", description="An optional script run after the user's")
    max_script_size: int = Field(1048576, ge=1024, description="Largest script a user may upload")
    max_scripts: int = Field(20, ge=1, description="Most scripts a user may keep")
    max_redirects: int = Field(4, ge=0, description="Most redirect actions one script run may take")


class Web(Section):
    base_url: str = Field("", description="Public URL of the web interface, e.g. https://mail.example.org/")
    session_lifetime: int = Field(86400, ge=300, description="Seconds a webmail login lasts")


class Config(Section):
    """The whole `kinmail.toml`."""

    hostname: str = Field("localhost", description="This server's name: greeting, HELO, Received, DSNs")
    data_dir: str = Field("/var/lib/kinmail", description="Mail, queue, indexes and state (relative to the config folder)")
    domains: list[str] = Field([], description="Domains we receive mail for")
    users_file: str = Field("users", description="Accounts, Dovecot passwd-file style")
    aliases_file: str = Field("aliases", description="Aliases, a Postfix virtual table")
    log_level: str = Field("info", description='"trace", "debug", "info", "warning" or "error"')
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
