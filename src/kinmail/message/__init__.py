"""MIME parsing and building for every part of kinmail; the IMAP server's FETCH, SEARCH, SORT and THREAD.

`Message(raw)` parses lazily (header fields on first use, the MIME tree on first use); the functions below
render what IMAP needs as bytes. Pure code over bytes: nothing here does I/O or keeps anything on disk, and
no input makes it raise except the documented `UnknownTransferEncoding` and `ValueError`s for bad criteria.
See docs/internals.md ("Messages") for the calls the IMAP server makes.
"""

from __future__ import annotations

from kinmail.message.address import Address, parse_addresses
from kinmail.message.build import fold_field, prepend_fields
from kinmail.message.headers import HeaderBlock, decode_words, parse_date
from kinmail.message.mime import Message, Part
from kinmail.message.search import header_contains, message_sent_date, text_contains
from kinmail.message.sections import (
    UnknownTransferEncoding,
    binary_bytes,
    decode_transfer,
    partial,
    section_bytes,
)
from kinmail.message.sort import SORT_KEYS, SortItem, base_subject, sort_ids
from kinmail.message.structure import bodystructure, envelope, imap_nstring, imap_string
from kinmail.message.thread import THREAD_ALGORITHMS, ThreadNode, render_threads, thread_ids

__all__ = [
    "SORT_KEYS",
    "THREAD_ALGORITHMS",
    "Address",
    "HeaderBlock",
    "Message",
    "Part",
    "SortItem",
    "ThreadNode",
    "UnknownTransferEncoding",
    "base_subject",
    "binary_bytes",
    "bodystructure",
    "decode_transfer",
    "decode_words",
    "envelope",
    "fold_field",
    "header_contains",
    "imap_nstring",
    "imap_string",
    "message_sent_date",
    "parse_addresses",
    "parse_date",
    "partial",
    "prepend_fields",
    "render_threads",
    "section_bytes",
    "sort_ids",
    "text_contains",
    "thread_ids",
]
