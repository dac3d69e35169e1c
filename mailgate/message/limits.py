"""Limits that stop MIME bombs and oversized headers; each one hit becomes a plain-English defect."""

from __future__ import annotations



MAX_PARTS = 1000  # MIME parts read; the message is cut after this many
MAX_DEPTH = 50  # MIME nesting levels read (multipart and message/rfc822 both count)
MAX_ADDRESS_HEADER = 64 * 1024  # characters of one address header that are parsed
MAX_FILENAME = 180  # characters kept of an attachment name
MAX_HEADER_BYTES = 256 * 1024  # bytes of one header block that are read
