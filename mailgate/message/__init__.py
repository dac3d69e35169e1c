"""Inbound mail as received (raw bytes + envelope) and its parsed view `Mail`; `parse()` turns one into the other.

Parsing never raises on bad input: what cannot be read becomes a recorded defect (plain English in
`Mail.defects`), and the raw bytes are always kept by the caller. The MIME tree is split here,
iteratively (one regex search per boundary line, no recursion, no per-line Python loop), with
limits against bombs. The stdlib `email` package (compat32) parses each header block; header text,
charsets, encoded-words, RFC 2231 parameters, transfer encodings and file names are decoded here,
leniently. Measurements and the choice over mail-parser: docs/parsing.md.

    model.py     Inbound, Mail, Address, Attachment          limits.py    the MIME-bomb and header limits
    charsets.py  charset labels and lenient decoding         headers.py   encoded-words, Message-IDs, addresses
    mime.py      the iterative MIME split                    payload.py   transfer encodings, RFC 2231 parameters
    htmltext.py  safe file names, HTML -> text               parse.py     parse(raw) -> Mail
"""

from .headers import decode_words
from .htmltext import html_to_text, sanitize_filename
from .limits import MAX_ADDRESS_HEADER, MAX_DEPTH, MAX_FILENAME, MAX_HEADER_BYTES, MAX_PARTS
from .model import Address, Attachment, Inbound, Mail
from .parse import MAX_DEFECTS, parse

__all__ = ["MAX_ADDRESS_HEADER", "MAX_DEFECTS", "MAX_DEPTH", "MAX_FILENAME", "MAX_HEADER_BYTES", "MAX_PARTS", "Address",
           "Attachment", "Inbound", "Mail", "decode_words", "html_to_text", "parse", "sanitize_filename"]
