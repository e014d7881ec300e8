"""The PROXY protocol header parser of src/fa_proxy.c, through fastaccept._core.

Every rule of src/fa_proxy.h has a case here with its outcome; every case is
also fed in pieces (at every offset: the result for a prefix is 0 until the
result is decided, and the whole input's result from there on, and a
complete header is reported exactly when its last byte arrives); the saved
corpus (tests/proxy/corpus/, also the fuzzer's seeds) is replayed. Headers
are built by hand from the spec's byte layout (fa_proxy_build), and by the
proxy-protocol package (PyPI), whose parser is the differential oracle:
whatever fastaccept accepts, the oracle accepts with the same length,
command, family, addresses and TLVs; whatever the oracle accepts and
fastaccept rejects must be one of the strict choices below. Hypothesis
builds valid headers of every version and family, and mutates them.

Where fastaccept rejects what the oracle (proxy-protocol 0.11, with the
crc32c package so that it checks checksums) accepts, on purpose (src/fa_proxy.h
gives the reasons), as stricter_reason() classifies them:
  v1  a line longer than 107 bytes (the oracle has no bound); after UNKNOWN,
      a byte outside %x20-7E (CTL, bare CR, byte >= 0x80) or no SP; ports
      with a leading zero, a sign or an underscore ("01", "+1", "1_0": the
      oracle calls int()); an IPv6 zone index ("fe80::1%eth0": the oracle
      uses ipaddress, which takes one).
  v2  a header longer than max_len (4096 by default; the oracle reads up to
      65551); a family byte other than the seven the spec lists (the oracle
      takes any, as UNKNOWN or LOCAL); a TLV area that is not a whole
      number of TLVs (the oracle drops a truncated tail), a second
      AUTHORITY, CRC32C or SSL (the oracle keeps the last), a CRC32C whose
      value is not 4 bytes, an SSL TLV shorter than 5 bytes or with broken
      sub-TLVs (the oracle does not look); a bad CRC32C behind family
      UNSPEC (the oracle stops reading there) or after the address block
      of a LOCAL header (the oracle reads that block as TLVs, and finds
      another CRC32C or none); a LOCAL header whose length is shorter than
      its family's address block.
Where the oracle is stricter, and how the comparison allows it:
  v2  a CRC32C over TLVs that are not in ascending type order, one of each:
      the oracle checksums its TLVs re-serialized in that order, so it
      refuses a right checksum (a bug of the oracle); the comparison checks
      the checksum with the bitwise reference instead.
  v2  a UNIX path that is not ASCII (the oracle decodes it as ASCII):
      fastaccept reports it as the socket module would (os.fsdecode).
Where the two report differently, and how the comparison normalises:
  v1  UNKNOWN is the oracle's "unknown" result, fastaccept's LOCAL (use the
      connection's own addresses); the oracle gives a v1 TCP4/TCP6 the
      transport UNSPEC, fastaccept STREAM.
  v2  for LOCAL the oracle reads everything after the 16 bytes as TLVs,
      whatever the family; fastaccept skips the family's address block
      first: for LOCAL with another family than UNSPEC the oracle's verdict
      on its TLVs (it may refuse them, reading addresses as a CRC32C) is not
      compared, and TLVs are compared for LOCAL only with UNSPEC. For
      PROXY with family UNSPEC the oracle reports no TLVs.
  v2  a UNIX pathname: the oracle keeps what follows its NUL (it strips
      only trailing NULs); fastaccept, like the kernel, ends it at the NUL:
      compared up to the NUL.
  v2  TLVs: the oracle gives a dict (the last of each type); compared after
      building the same dict from fastaccept's list.

Hypothesis runs the "ci" profile (derandomized, bounded example counts) by
default; FA_HYPOTHESIS_PROFILE=dig runs many random examples.
"""
from __future__ import annotations

import ipaddress
import os
import re
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proxyprotocol import ProxyProtocolChecksumError

from fa_proxy_build import (FAMILY_BYTES, LOCAL, PP2_SUBTYPE_SSL_VERSION, PP2_TYPE_ALPN,
                            PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP,
                            PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID, PROXY, SIG, crc32c, oracle,
                            split_tlvs, ssl_tlv, tlv, v1, v2)
from fastaccept import _core as core
from fa_testutil import scaled

CORPUS = Path(__file__).resolve().parent / "corpus"

OK = 1          # in the tables: accepted, the whole input is the header
INC = 0
NOTPROXY = core.PROXY_ENOTPROXY
MALFORMED = core.PROXY_EMALFORMED
VERSION = core.PROXY_EVERSION
COMMAND = core.PROXY_ECOMMAND
FAMILY = core.PROXY_EFAMILY
TOOLONG = core.PROXY_ETOOLONG
CHECKSUM = core.PROXY_ECHECKSUM
NAMES = {OK: "ok", INC: "inc", NOTPROXY: "notproxy", MALFORMED: "malformed",
         VERSION: "version", COMMAND: "command", FAMILY: "family", TOOLONG: "toolong",
         CHECKSUM: "checksum"}

Result = Tuple[int, Optional[Dict[str, Any]]]


def parse(data: bytes, max_len: int = core.PROXY_DEFAULT_MAX_LEN) -> Result:
    return core.parse_proxy_header(data, max_len)


def assert_incremental_agrees(data: bytes, max_len: int = core.PROXY_DEFAULT_MAX_LEN
                              ) -> Result:
    """Parse data at once and every prefix of it: each prefix gives 0 until
    the result is decided and the whole input's result from then on; a
    complete header is complete exactly at its last byte."""
    whole = parse(data, max_len)
    decided_at = None
    for k in range(len(data) + 1):
        got = parse(data[:k], max_len)
        if got[0] == 0:
            assert decided_at is None, (data, k, "undecided again after", decided_at)
            continue
        if decided_at is None:
            decided_at = k
        assert got == whole, (data, k)
    if whole[0] > 0:
        assert decided_at == whole[0], (data, decided_at)
    if decided_at is None:
        assert whole[0] == 0
    return whole


# ---------------------------------------------------------------------------
# Every rule, with its outcome

V2_TCP4 = v2()
V6_MAX = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

CASES: List[Tuple[str, bytes, int]] = [
    # detection
    ("empty", b"", INC),
    ("p", b"P", INC),
    ("proxy-no-space-yet", b"PROXY", INC),
    ("http-get", b"GET / HTTP/1.1\r\n\r\n", NOTPROXY),
    ("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", NOTPROXY),
    ("lower-case-proxy", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NOTPROXY),
    ("proxx", b"PROXX", NOTPROXY),
    ("space-before-proxy", b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NOTPROXY),
    ("crlf-then-http", b"\r\nGET / HTTP/1.1\r\n", NOTPROXY),
    ("v2-signature-prefix", SIG[:7], INC),
    ("v2-signature-typo", SIG[:11] + b"\x0b" + V2_TCP4[12:], NOTPROXY),
    ("v2-signature-only", SIG, INC),
    ("v2-fixed-part-short", V2_TCP4[:15], INC),
    # v1: accepted
    ("v1-tcp4-spec-example", v1(), OK),
    ("v1-tcp4-zeros", v1("TCP4", "0.0.0.0", "0.0.0.0", 0, 0), OK),
    ("v1-tcp4-max", v1("TCP4", "255.255.255.255", "255.255.255.255", 65535, 65535), OK),
    ("v1-tcp6-loopback", v1("TCP6", "::1", "::1", 1, 2), OK),
    ("v1-tcp6-unspecified", v1("TCP6", "::", "::", 1, 2), OK),
    ("v1-tcp6-full", v1("TCP6", V6_MAX, V6_MAX, 65535, 65535), OK),
    ("v1-tcp6-upper-case", v1("TCP6", "2001:DB8::A", "2001:db8::b", 1, 2), OK),
    ("v1-tcp6-leading-zeros-in-group", v1("TCP6", "2001:0db8::0001", "::1", 1, 2), OK),
    ("v1-tcp6-double-colon-end", v1("TCP6", "1:2:3:4:5:6:7::", "1::", 1, 2), OK),
    ("v1-tcp6-double-colon-one-group", v1("TCP6", "1:2:3:4:5:6::8", "1::3:4:5:6:7:8", 1, 2),
     OK),
    ("v1-tcp6-v4-mapped", v1("TCP6", "::ffff:127.0.0.1", "::ffff:10.0.0.1", 1, 2), OK),
    ("v1-tcp6-v4-tail-of-eight", v1("TCP6", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.4", 1, 2), OK),
    ("v1-unknown-short", b"PROXY UNKNOWN\r\n", OK),
    ("v1-unknown-with-addresses", v1("UNKNOWN", V6_MAX, V6_MAX, 65535, 65535), OK),
    ("v1-unknown-anything-printable", b"PROXY UNKNOWN ~!@#$%^&*() \x7e\r\n", OK),
    ("v1-unknown-space-only", b"PROXY UNKNOWN \r\n", OK),
    # v1: rejected
    ("v1-proxy-then-tab", b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", MALFORMED),
    ("v1-proxyx", b"PROXYX", MALFORMED),
    ("v1-two-spaces-after-proxy", b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", MALFORMED),
    ("v1-empty-proto", b"PROXY \r\n", MALFORMED),
    ("v1-udp4", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", FAMILY),
    ("v1-tcp5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", FAMILY),
    ("v1-lower-tcp4", b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", FAMILY),
    ("v1-tcp4x", b"PROXY TCP4X 1.2.3.4 5.6.7.8 1 2\r\n", FAMILY),
    ("v1-tcp-only", b"PROXY TCP\r\n", FAMILY),
    ("v1-unknownx", b"PROXY UNKNOWNX\r\n", FAMILY),
    ("v1-proto-nul", b"PROXY T\x00", MALFORMED),
    ("v1-tcp4-no-addresses", b"PROXY TCP4\r\n", MALFORMED),
    ("v1-tcp4-space-then-crlf", b"PROXY TCP4 \r\n", MALFORMED),
    ("v1-tcp4-missing-dport", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", MALFORMED),
    ("v1-tcp4-extra-field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", MALFORMED),
    ("v1-tcp4-two-spaces", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", MALFORMED),
    ("v1-tcp4-tab", b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", MALFORMED),
    ("v1-tcp4-trailing-space", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", MALFORMED),
    ("v1-tcp4-leading-zero-octet", v1("TCP4", "192.168.0.01"), MALFORMED),
    ("v1-tcp4-octet-256", v1("TCP4", "192.168.0.256"), MALFORMED),
    ("v1-tcp4-octet-1000", v1("TCP4", "1000.1.1.1"), MALFORMED),
    ("v1-tcp4-three-octets", v1("TCP4", "192.168.1"), MALFORMED),
    ("v1-tcp4-five-octets", v1("TCP4", "1.2.3.4.5"), MALFORMED),
    ("v1-tcp4-empty-octet", v1("TCP4", "1..3.4"), MALFORMED),
    ("v1-tcp4-trailing-dot", v1("TCP4", "1.2.3.4."), MALFORMED),
    ("v1-tcp4-hex", v1("TCP4", "0x7f.0.0.1"), MALFORMED),
    ("v1-tcp4-ipv6-address", v1("TCP4", "::1"), MALFORMED),
    ("v1-tcp4-plus-octet", v1("TCP4", "+1.2.3.4"), MALFORMED),
    ("v1-tcp6-ipv4-address", v1("TCP6", "1.2.3.4", "::1"), MALFORMED),
    ("v1-tcp6-ipv4-dst", v1("TCP6", "::1", "1.2.3.4"), MALFORMED),
    ("v1-tcp6-single-colon-start", v1("TCP6", ":1", "::1"), MALFORMED),
    ("v1-tcp6-triple-colon", v1("TCP6", "1:::2", "::1"), MALFORMED),
    ("v1-tcp6-two-double-colons", v1("TCP6", "1::2::3", "::1"), MALFORMED),
    ("v1-tcp6-five-digit-group", v1("TCP6", "12345::", "::1"), MALFORMED),
    ("v1-tcp6-seven-groups", v1("TCP6", "1:2:3:4:5:6:7", "::1"), MALFORMED),
    ("v1-tcp6-nine-groups", v1("TCP6", "1:2:3:4:5:6:7:8:9", "::1"), MALFORMED),
    ("v1-tcp6-eight-groups-and-double-colon", v1("TCP6", "1:2:3:4:5:6:7:8::", "::1"),
     MALFORMED),
    ("v1-tcp6-double-colon-then-eight", v1("TCP6", "::1:2:3:4:5:6:7:8", "::1"), MALFORMED),
    ("v1-tcp6-seven-then-double-colon-then-one", v1("TCP6", "1:2:3:4:5:6:7::8", "::1"),
     MALFORMED),
    ("v1-tcp6-trailing-colon", v1("TCP6", "1:2:3:4:5:6:7:8:", "::1"), MALFORMED),
    ("v1-tcp6-zone", v1("TCP6", "fe80::1%eth0", "::1"), MALFORMED),
    ("v1-tcp6-brackets", v1("TCP6", "[::1]", "::1"), MALFORMED),
    ("v1-tcp6-v4-too-early", v1("TCP6", "1:2:3:4:5:6:7:1.2.3.4", "::1"), MALFORMED),
    ("v1-tcp6-v4-not-last", v1("TCP6", "::1.2.3.4:1", "::1"), MALFORMED),
    ("v1-tcp6-v4-leading-zero", v1("TCP6", "::ffff:1.2.3.04", "::1"), MALFORMED),
    ("v1-tcp6-v4-hex-digit", v1("TCP6", "::ffff:1a.2.3.4", "::1"), MALFORMED),
    ("v1-tcp6-non-hex", v1("TCP6", "::g", "::1"), MALFORMED),
    ("v1-port-leading-zero", v1(sport="01"), MALFORMED),
    ("v1-port-00", v1(sport="00"), MALFORMED),
    ("v1-port-65536", v1(sport=65536), MALFORMED),
    ("v1-port-99999", v1(dport=99999), MALFORMED),
    ("v1-port-six-digits", v1(dport="100000"), MALFORMED),
    ("v1-port-plus", v1(sport="+1"), MALFORMED),
    ("v1-port-minus", v1(sport="-1"), MALFORMED),
    ("v1-port-underscore", v1(sport="1_0"), MALFORMED),
    ("v1-port-empty", b"PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n", MALFORMED),
    ("v1-bare-lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", MALFORMED),
    ("v1-bare-cr", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", MALFORMED),
    ("v1-cr-cr-lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", MALFORMED),
    ("v1-unknown-bare-lf", b"PROXY UNKNOWN\n", MALFORMED),
    ("v1-unknown-bare-lf-in-tail", b"PROXY UNKNOWN a\nb\r\n", MALFORMED),
    ("v1-unknown-bare-cr-in-tail", b"PROXY UNKNOWN a\rb\r\n", MALFORMED),
    ("v1-unknown-nul-in-tail", b"PROXY UNKNOWN a\x00b\r\n", MALFORMED),
    ("v1-unknown-tab-in-tail", b"PROXY UNKNOWN a\tb\r\n", MALFORMED),
    ("v1-unknown-utf8-in-tail", b"PROXY UNKNOWN \xc3\xa9\r\n", MALFORMED),
    ("v1-unknown-107", b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n", OK),
    ("v1-unknown-108", b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", TOOLONG),
    ("v1-unknown-endless", b"PROXY UNKNOWN " + b"x" * 200, TOOLONG),
    ("v1-unknown-106-no-crlf-yet", b"PROXY UNKNOWN " + b"x" * 92, INC),
    ("v1-unknown-cr-at-106", b"PROXY UNKNOWN " + b"x" * 91 + b"\r", INC),
    ("v1-unknown-cr-at-107", b"PROXY UNKNOWN " + b"x" * 92 + b"\r", TOOLONG),
    ("v1-tcp6-v4-tails-too-long",
     v1("TCP6", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535, 65535), TOOLONG),
    ("v1-incomplete-in-address", b"PROXY TCP4 192.168.", INC),
    ("v1-incomplete-before-lf", v1()[:-1], INC),
    # v2: accepted
    ("v2-tcp4", V2_TCP4, OK),
    ("v2-udp4", v2(fam=0x12), OK),
    ("v2-tcp6", v2(fam=0x21), OK),
    ("v2-udp6", v2(fam=0x22), OK),
    ("v2-unix", v2(fam=0x31), OK),
    ("v2-unix-dgram", v2(fam=0x32), OK),
    ("v2-unix-abstract", v2(fam=0x31, src=b"\0abstract", dst=b"\0lb"), OK),
    ("v2-unix-unnamed-client", v2(fam=0x31, src=b"", dst=b"/run/lb.sock"), OK),
    ("v2-unix-full-108", v2(fam=0x31, src=b"a" * 108, dst=b"b" * 108), OK),
    ("v2-local-unspec", v2(LOCAL, 0x00), OK),
    ("v2-local-tcp4-addresses", v2(LOCAL, 0x11), OK),
    ("v2-local-with-tlvs", v2(LOCAL, 0x00, tlvs=tlv(PP2_TYPE_NOOP, b"")), OK),
    ("v2-proxy-unspec", v2(PROXY, 0x00), OK),
    ("v2-proxy-unspec-with-tlvs", v2(PROXY, 0x00, tlvs=tlv(PP2_TYPE_UNIQUE_ID, b"id")), OK),
    ("v2-tlvs", v2(tlvs=tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"example.com")
                   + tlv(PP2_TYPE_NOOP, b"\0" * 5) + tlv(0xE0, b"custom")), OK),
    ("v2-empty-tlv-value", v2(tlvs=tlv(PP2_TYPE_NOOP, b"")), OK),
    ("v2-repeated-other-tlv", v2(tlvs=tlv(PP2_TYPE_NOOP, b"a") + tlv(PP2_TYPE_NOOP, b"b")), OK),
    ("v2-ssl", v2(tlvs=ssl_tlv(1, 0, [(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3")])), OK),
    ("v2-ssl-bare", v2(tlvs=ssl_tlv(0, 1)), OK),
    ("v2-crc32c", v2(crc=True), OK),
    ("v2-crc32c-tcp6-tlvs", v2(fam=0x21, tlvs=tlv(PP2_TYPE_AUTHORITY, b"a.example"),
                               crc=True), OK),
    ("v2-crc32c-local", v2(LOCAL, 0x00, crc=True), OK),
    ("v2-at-default-bound", v2(tlvs=tlv(PP2_TYPE_NOOP, b"\0" * (4096 - 28 - 3))), OK),
    # v2: rejected
    ("v2-version-1", v2(version=1), VERSION),
    ("v2-version-3", v2(version=3), VERSION),
    ("v2-version-0", v2(version=0), VERSION),
    ("v2-version-f", v2(version=15), VERSION),
    ("v2-command-2", v2(command=2), COMMAND),
    ("v2-command-f", v2(command=15), COMMAND),
    ("v2-family-4", v2(fam=0x41, addresses=b""), FAMILY),
    ("v2-family-f", v2(fam=0xF1, addresses=b""), FAMILY),
    ("v2-transport-3", v2(fam=0x13, addresses=b"\0" * 12), FAMILY),
    ("v2-inet-unspec-transport", v2(fam=0x10, addresses=b"\0" * 12), FAMILY),
    ("v2-unspec-stream", v2(fam=0x01, addresses=b""), FAMILY),
    ("v2-local-family-4", v2(LOCAL, 0x41, addresses=b""), FAMILY),
    ("v2-tcp4-short-addresses", v2(fam=0x11, addresses=b"\0" * 11), MALFORMED),
    ("v2-tcp6-ipv4-length", v2(fam=0x21, addresses=b"\0" * 12), MALFORMED),
    ("v2-unix-short", v2(fam=0x31, addresses=b"\0" * 215), MALFORMED),
    ("v2-local-tcp4-no-addresses", v2(LOCAL, 0x11, addresses=b""), MALFORMED),
    ("v2-tlv-one-byte-left", v2(tlvs=b"\x04"), MALFORMED),
    ("v2-tlv-two-bytes-left", v2(tlvs=b"\x04\x00"), MALFORMED),
    ("v2-tlv-value-past-end", v2(tlvs=b"\x04\x00\x05abcd"), MALFORMED),
    ("v2-tlv-second-past-end", v2(tlvs=tlv(PP2_TYPE_NOOP, b"") + b"\x04\x00\x01"),
     MALFORMED),
    ("v2-two-authorities", v2(tlvs=tlv(PP2_TYPE_AUTHORITY, b"a") + tlv(PP2_TYPE_AUTHORITY, b"b")),
     MALFORMED),
    ("v2-two-ssl", v2(tlvs=ssl_tlv() + ssl_tlv()), MALFORMED),
    ("v2-ssl-short", v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01\0\0\0")), MALFORMED),
    ("v2-ssl-sub-tlv-past-end", v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01\0\0\0\0\x21\x00\x09TLS")),
     MALFORMED),
    ("v2-ssl-sub-tlv-stray-byte", v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01\0\0\0\0\x21")), MALFORMED),
    ("v2-crc32c-short", v2(tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0\0")), MALFORMED),
    ("v2-crc32c-long", v2(tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0\0\0\0")), MALFORMED),
    ("v2-two-crc32c", v2(tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0\0\0"), crc=True), MALFORMED),
    ("v2-crc32c-wrong", v2(tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")), CHECKSUM),
    ("v2-crc32c-wrong-unspec", v2(PROXY, 0x00, tlvs=tlv(PP2_TYPE_CRC32C, b"\1\2\3\4")),
     CHECKSUM),
    ("v2-over-default-bound", v2(tlvs=tlv(PP2_TYPE_NOOP, b"\0" * (4097 - 28 - 3))), TOOLONG),
    ("v2-length-ffff", SIG + b"\x21\x11\xff\xff", TOOLONG),
    ("v2-incomplete-addresses", V2_TCP4[:20], INC),
    ("v2-incomplete-tlvs", v2(tlvs=tlv(PP2_TYPE_NOOP, b"abc"))[:-1], INC),
]

CASE_IDS = [c[0] for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("data, expected", [pytest.param(d, e, id=i) for i, d, e in CASES])
def test_rules(data: bytes, expected: int) -> None:
    rc, head = assert_incremental_agrees(data)
    if expected == OK:
        assert rc == len(data) and head is not None, (rc, core.PROXY_ERRORS.get(rc))
    else:
        assert rc == expected and head is None, (rc, core.PROXY_ERRORS.get(rc))


def test_every_error_has_a_name() -> None:
    assert sorted(core.PROXY_ERRORS) == list(range(-7, 0))
    assert {NOTPROXY, MALFORMED, VERSION, COMMAND, FAMILY, TOOLONG, CHECKSUM} == set(
        core.PROXY_ERRORS)


# ---------------------------------------------------------------------------
# What a complete header reports

def test_v1_tcp4_fields_and_payload() -> None:
    data = v1() + b"GET / HTTP/1.1\r\n\r\n"
    rc, h = parse(data)
    assert rc == len(v1()) == 47
    assert h == {"version": 1, "command": "PROXY", "family": "TCP4",
                 "src": ("192.168.0.1", 56324), "dst": ("192.168.0.11", 443),
                 "header_len": 47, "tlvs": [], "authority": None, "ssl": None,
                 "crc32c": False}
    assert data[rc:] == b"GET / HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("text, reported", [
    ("::1", "::1"),
    ("2001:DB8:0:0:0:0:0:A", "2001:db8::a"),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
    ("0:0:0:0:0:0:0:0", "::"),
    (V6_MAX, V6_MAX),
])
def test_v1_tcp6_addresses(text: str, reported: str) -> None:
    rc, h = parse(v1("TCP6", text, "::2", 8080, 80))
    assert rc > 0 and h is not None
    assert h["src"] == (reported, 8080, 0, 0) and h["dst"] == ("::2", 80, 0, 0)
    assert ipaddress.ip_address(h["src"][0]) == ipaddress.ip_address(text)


def test_v1_unknown_is_local_without_addresses() -> None:
    for data in (b"PROXY UNKNOWN\r\n", v1("UNKNOWN")):
        rc, h = parse(data + b"payload")
        assert rc == len(data) and h is not None
        assert (h["version"], h["command"], h["family"], h["src"], h["dst"]) == (
            1, "LOCAL", "UNKNOWN", None, None)


@pytest.mark.parametrize("fam, name", sorted((b, n) for n, b in FAMILY_BYTES.items()))
def test_v2_families(fam: int, name: str) -> None:
    data = v2(PROXY, fam)
    rc, h = parse(data + b"after")
    assert rc == len(data) and h is not None
    assert (h["version"], h["command"], h["family"]) == (2, "PROXY", name)
    if fam >> 4 == 1:
        assert (h["src"], h["dst"]) == (("10.0.0.1", 1234), ("10.0.0.2", 443))
    elif fam >> 4 == 2:
        assert (h["src"], h["dst"]) == (("2001:db8::1", 1234, 0, 0), ("2001:db8::2", 443, 0, 0))
    elif fam >> 4 == 3:
        assert (h["src"], h["dst"]) == ("/tmp/client.sock", "/run/lb.sock")
    else:
        assert (h["src"], h["dst"]) == (None, None)
    # LOCAL: the family as sent, no addresses
    rc, h = parse(v2(LOCAL, fam))
    assert rc > 0 and h is not None
    assert (h["command"], h["family"], h["src"], h["dst"]) == ("LOCAL", name, None, None)


def test_v2_unix_paths_as_the_socket_module_reports_them() -> None:
    def src(path: bytes) -> Any:
        rc, h = parse(v2(fam=0x31, src=path))
        assert rc > 0 and h is not None
        return h["src"]
    assert src(b"/tmp/a") == "/tmp/a"
    assert src(b"") == ""                               # unnamed
    assert src(b"\0name") == b"\0name"                  # abstract, trailing NULs dropped
    assert src(b"\0na\0me") == b"\0na\0me"
    assert src(b"x" * 108) == "x" * 108                 # no NUL at all
    assert src("/tmp/é".encode()) == "/tmp/é"
    assert src(b"/tmp/\xff") == os.fsdecode(b"/tmp/\xff")


def test_v2_tlvs_authority_ssl_crc() -> None:
    tlvs = (tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"example.com")
            + ssl_tlv(0x05, 7, [(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3"), (0x22, b"cn")])
            + tlv(PP2_TYPE_NOOP, b""))
    data = v2(fam=0x21, tlvs=tlvs, crc=True)
    rc, h = parse(data)
    assert rc == len(data) and h is not None
    assert h["tlvs"] == split_tlvs(data[16 + 36:])
    assert [t for t, _ in h["tlvs"]] == [PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_SSL,
                                         PP2_TYPE_NOOP, PP2_TYPE_CRC32C]
    assert h["authority"] == b"example.com"
    assert h["ssl"] == (0x05, 7)
    assert h["crc32c"] is True
    rc, h = parse(v2())
    assert h is not None and (h["authority"], h["ssl"], h["crc32c"], h["tlvs"]) == (
        None, None, False, [])


@pytest.mark.parametrize("position", range(28))
def test_v2_crc32c_covers_every_byte(position: int) -> None:
    data = bytearray(v2(crc=True))
    assert parse(bytes(data))[0] == len(data)
    if position in (12, 13, 14, 15):
        return              # changing these changes what the header is
    data[position] ^= 0x01
    rc = parse(bytes(data))[0]
    assert rc == (NOTPROXY if position < 12 else CHECKSUM)


def test_crc32c_known_values() -> None:
    assert core.proxy_crc32c(b"") == 0
    assert core.proxy_crc32c(b"123456789") == 0xE3069283        # the CRC-32C check value
    assert core.proxy_crc32c(b"\0" * 32) == 0x8A9136AA          # RFC 3720 B.4
    assert core.proxy_crc32c(b"\xff" * 32) == 0x62A8AB43
    assert core.proxy_crc32c(bytes(range(32))) == 0x46DD794E
    data = bytes(range(256)) * 3
    assert core.proxy_crc32c(data) == crc32c(data)
    assert core.proxy_crc32c(data[100:], core.proxy_crc32c(data[:100])) == crc32c(data)


@pytest.mark.parametrize("max_len", [core.PROXY_MIN_MAX_LEN, 300, 4096, core.PROXY_MAX_MAX_LEN])
def test_v2_max_len(max_len: int) -> None:
    def header(total: int) -> bytes:
        return v2(tlvs=tlv(PP2_TYPE_NOOP, b"\0" * (total - 28 - 3)))
    assert parse(header(max_len), max_len)[0] == max_len
    if max_len < core.PROXY_MAX_MAX_LEN:
        over = header(max_len + 1)
        assert parse(over, max_len)[0] == TOOLONG
        assert parse(over[:16], max_len)[0] == TOOLONG      # decided on the fixed part
    # UNIX fits under any bound
    assert parse(v2(fam=0x31), max_len)[0] == 232
    # the bound is for v2 only: v1 has its own
    assert parse(v1("TCP6", V6_MAX, V6_MAX, 65535, 65535), max_len)[0] == 104


def test_default_max_len() -> None:
    assert core.PROXY_DEFAULT_MAX_LEN == 4096
    assert core.PROXY_MIN_MAX_LEN == 232 and core.PROXY_MAX_MAX_LEN == 65551
    assert core.PROXY_V1_MAX == 107


def test_bytes_like_inputs() -> None:
    data = v1()
    assert parse(bytearray(data)) == parse(data) == core.parse_proxy_header(memoryview(data))


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"max_len": 231}, ValueError, "max_len"),
    ({"max_len": 65552}, ValueError, "max_len"),
    ({"max_len": "4096"}, TypeError, "max_len"),
    ({"max_len": True}, TypeError, "max_len"),
    ({"max_len": 4096.0}, TypeError, "max_len"),
])
def test_bad_max_len(kwargs: Dict[str, Any], exc: type, word: str) -> None:
    with pytest.raises(exc, match=word):
        core.parse_proxy_header(v1(), **kwargs)


def test_bad_data() -> None:
    for bad in ("PROXY UNKNOWN\r\n", None, 5, [1]):
        with pytest.raises(TypeError, match="data"):
            core.parse_proxy_header(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        core.proxy_crc32c("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crc"):
        core.proxy_crc32c(b"x", 1 << 32)


@pytest.mark.parametrize("byte", range(256))
def test_every_first_byte(byte: int) -> None:
    rc = parse(bytes([byte]))[0]
    assert rc == (INC if byte in (ord("P"), 0x0D) else NOTPROXY)


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_in_the_unknown_tail(byte: int) -> None:
    data = b"PROXY UNKNOWN a" + bytes([byte]) + b"b\r\n"
    expected = OK if 0x20 <= byte <= 0x7E else MALFORMED
    if byte == 0x0D:
        expected = MALFORMED            # CR then "b": a bare CR
    rc = assert_incremental_agrees(data)[0]
    assert rc == (len(data) if expected == OK else expected)


@pytest.mark.parametrize("byte", range(256))
def test_every_family_byte(byte: int) -> None:
    data = v2(PROXY, byte, addresses=b"\0" * 216)
    listed = byte in FAMILY_BYTES.values()
    assert parse(data)[0] == (len(data) if listed else FAMILY)
    assert parse(data[:14])[0] == (INC if listed else FAMILY)


@pytest.mark.parametrize("byte", range(256))
def test_every_version_command_byte(byte: int) -> None:
    data = v2(addresses=None)
    data = data[:12] + bytes([byte]) + data[13:]
    version, command = byte >> 4, byte & 0x0F
    expected = (len(data) if version == 2 and command <= 1
                else VERSION if version != 2 else COMMAND)
    assert parse(data)[0] == expected


# ---------------------------------------------------------------------------
# Differential: the oracle, and where fastaccept is stricter on purpose

def stricter_reason(data: bytes, max_len: int = core.PROXY_DEFAULT_MAX_LEN) -> Optional[str]:
    """Why fastaccept rejects what the oracle accepts, as one of the strict
    choices of src/fa_proxy.h (see the module docstring); None if none
    applies."""
    if data[:6] == b"PROXY ":
        line = data[:data.find(b"\n") + 1]
        if len(line) > core.PROXY_V1_MAX:
            return "v1 longer than 107 bytes"
        body = line[6:-2]
        proto, _, rest = body.partition(b" ")
        if proto.startswith(b"UNKNOWN"):
            if proto != b"UNKNOWN" or any(not 0x20 <= c <= 0x7E for c in rest):
                return "v1 UNKNOWN tail outside %x20-7E or not after SP"
            return None
        parts = rest.split(b" ")
        if len(parts) == 4:
            if any(re.fullmatch(rb"0|[1-9][0-9]{0,4}", p) is None for p in parts[2:]):
                return "v1 port with a leading zero, sign or underscore"
            if proto == b"TCP6" and any(b"%" in p for p in parts[:2]):
                return "v1 IPv6 zone index"
        return None
    if data[:12] != SIG or len(data) < 16:
        return None
    total = 16 + struct.unpack_from("!H", data, 14)[0]
    if total > max_len:
        return "v2 longer than max_len"
    fam = data[13]
    if fam not in FAMILY_BYTES.values():
        return "v2 family byte not one of the seven"
    size = {0: 0, 1: 12, 2: 36, 3: 216}[fam >> 4]
    if total - 16 < size:
        return "v2 length shorter than the address block (LOCAL)"
    area = data[16 + size:total]
    seen: List[int] = []
    i = 0
    while i < len(area):
        if len(area) - i < 3:
            return "v2 TLV area not whole TLVs"
        t, n = area[i], struct.unpack_from("!H", area, i + 1)[0]
        if i + 3 + n > len(area):
            return "v2 TLV area not whole TLVs"
        value = area[i + 3:i + 3 + n]
        if t in (PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_SSL) and t in seen:
            return "v2 second AUTHORITY, CRC32C or SSL"
        if t == PP2_TYPE_CRC32C and n != 4:
            return "v2 CRC32C value not 4 bytes"
        if t == PP2_TYPE_SSL:
            try:
                if n < 5:
                    raise ValueError
                split_tlvs(value[5:])
            except (AssertionError, ValueError, struct.error):
                return "v2 SSL TLV malformed"
        seen.append(t)
        i += 3 + n
    if PP2_TYPE_CRC32C in seen and fam == 0x00 and data[12] & 0x0F == PROXY:
        return "v2 bad CRC32C behind family UNSPEC (the oracle stops reading)"
    if PP2_TYPE_CRC32C in seen and fam != 0x00 and data[12] & 0x0F == LOCAL:
        return "v2 bad CRC32C after a LOCAL address block (the oracle reads it as TLVs)"
    return None


def crc32c_with_zeroed_value(header: bytes) -> int:
    """The bitwise CRC32c of a v2 header with its CRC32C value taken as zero."""
    size = {0: 0, 1: 12, 2: 36, 3: 216}[header[13] >> 4]
    i = 16 + size
    while header[i] != PP2_TYPE_CRC32C:
        i += 3 + struct.unpack_from("!H", header, i + 1)[0]
    return crc32c(header[:i + 3] + b"\0\0\0\0" + header[i + 7:])


def compare_with_oracle(data: bytes, rc: int, h: Dict[str, Any]) -> None:
    kind, got = oracle(data)
    where = f"on {data!r}"
    if h["command"] == "LOCAL" and h["version"] == 2 and h["family"] != "UNKNOWN":
        # the oracle reads the address block as TLVs: its verdict on them
        # (a checksum over other bytes, a CRC32C "TLV" of another length)
        # is about something else
        assert kind in ("ok", "error"), where
        return
    if kind == "error" and isinstance(got, UnicodeDecodeError):
        # the oracle decodes UNIX paths as ASCII
        assert h["family"] in ("UNIX", "UNIX_DGRAM"), where
        assert any(c >= 0x80 for c in data[16:16 + 216]), where
        return
    if kind == "error" and isinstance(got, ProxyProtocolChecksumError):
        # the oracle checksums its TLVs re-serialized in ascending type
        # order, one of each: right only when they came that way
        types = [t for t, _ in h["tlvs"]]
        assert types != sorted(set(types)), where
        assert h["crc32c"] and crc32c_with_zeroed_value(data[:rc]) == struct.unpack(
            "!I", dict(h["tlvs"])[PP2_TYPE_CRC32C])[0], where
        return
    assert kind == "ok", f"fastaccept accepted, the oracle: {kind} {got!r} {where}"
    n, shape = got
    assert n == rc, where
    if h["version"] == 1 and h["command"] == "LOCAL":
        assert shape == {"command": "UNKNOWN"}, where
        return
    if h["version"] == 2 and h["command"] == "PROXY" and h["family"] == "UNKNOWN":
        assert shape == {"command": "UNKNOWN"}, where
        return
    ours_tlvs = {t: v for t, v in h["tlvs"]}
    if h["command"] == "LOCAL":
        assert shape["command"] == "LOCAL", where
        if h["family"] == "UNKNOWN":
            assert shape["tlvs"] == ours_tlvs, where
        return
    assert shape["command"] == "PROXY", where
    if h["version"] == 2:
        assert shape["tlvs"] == ours_tlvs, where
        transport = "DGRAM" if h["family"] in ("UDP4", "UDP6", "UNIX_DGRAM") else "STREAM"
        assert shape["transport"] == transport, where
    if h["family"] in ("UNIX", "UNIX_DGRAM"):
        assert shape["family"] == "UNIX", where
        for side in ("src", "dst"):
            ours = h[side] if isinstance(h[side], bytes) else os.fsencode(h[side])
            theirs = shape[side].encode("ascii")
            if not theirs.startswith(b"\0"):
                theirs = theirs.split(b"\0")[0]    # a pathname ends at its NUL
            assert theirs == ours, where
        return
    assert shape["family"] == ("INET" if h["family"] in ("TCP4", "UDP4") else "INET6"), where
    for side in ("src", "dst"):
        host, port = h[side][0], h[side][1]
        assert shape[side] == (ipaddress.ip_address(host), port), where


def differential(data: bytes) -> int:
    """fastaccept's rc on data; if it accepts, the oracle must accept the
    same; if the oracle accepts and fastaccept rejects, the input must be
    one of the strict choices."""
    rc, h = parse(data)
    if rc > 0:
        assert h is not None
        compare_with_oracle(data, rc, h)
    elif rc < 0:
        kind, got = oracle(data)
        if kind == "ok":
            assert stricter_reason(data) is not None, (
                f"fastaccept: {core.PROXY_ERRORS[rc]}, the oracle accepts {got!r} on {data!r}")
    return rc


@pytest.mark.parametrize("data, expected", [pytest.param(d, e, id=i) for i, d, e in CASES])
def test_rules_against_the_oracle(data: bytes, expected: int) -> None:
    differential(data)


STRICTER = [
    ("v1-longer-than-107", v1("TCP6", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
                              "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535, 65535)),
    ("v1-unknown-nul", b"PROXY UNKNOWN a\x00b\r\n"),
    ("v1-unknown-bare-cr", b"PROXY UNKNOWN a\rb\r\n"),
    ("v1-port-leading-zero", v1(sport="01")),
    ("v1-port-plus", v1(sport="+1")),
    ("v1-port-underscore", v1(sport="1_0")),
    ("v1-zone", v1("TCP6", "fe80::1%eth0", "::1")),
    ("v2-over-max-len", v2(tlvs=tlv(PP2_TYPE_NOOP, b"\0" * 5000))),
    ("v2-family-0x10", v2(fam=0x10, addresses=b"\0" * 12)),
    ("v2-local-family-0x41", v2(LOCAL, 0x41, addresses=b"")),
    ("v2-tlv-tail", v2(tlvs=b"\x04\x00")),
    ("v2-tlv-past-end", v2(tlvs=b"\x04\x00\x05abcd")),
    ("v2-two-authorities", v2(tlvs=tlv(PP2_TYPE_AUTHORITY, b"a") + tlv(PP2_TYPE_AUTHORITY, b"b"))),
    ("v2-ssl-short", v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01"))),
    ("v2-unspec-bad-crc", v2(PROXY, 0x00, tlvs=tlv(PP2_TYPE_CRC32C, b"\1\2\3\4"))),
    ("v2-local-short-for-family", v2(LOCAL, 0x11, addresses=b"")),
    ("v2-local-bad-crc-after-addresses", v2(LOCAL, 0x11, tlvs=tlv(PP2_TYPE_CRC32C, b"1234"))),
]


@pytest.mark.parametrize("data", [pytest.param(d, id=i) for i, d in STRICTER])
def test_where_stricter_than_the_oracle(data: bytes) -> None:
    """Each strict choice, measured: the oracle accepts, fastaccept refuses."""
    assert oracle(data)[0] == "ok"
    assert parse(data)[0] < 0
    assert stricter_reason(data) is not None


# strategies: valid headers

ipv4s = st.ip_addresses(v=4).map(str)


@st.composite
def ipv6_texts(draw: Any) -> str:
    """An IPv6 address in one of its spellings: compressed, full, leading
    zeros, upper case, a dotted-quad tail."""
    a = draw(st.ip_addresses(v=6))
    style = draw(st.sampled_from(["compressed", "exploded", "upper", "short", "v4tail"]))
    if style == "compressed":
        return str(a)
    if style == "exploded":
        return a.exploded
    if style == "upper":
        return str(a).upper()
    groups = [int(g, 16) for g in a.exploded.split(":")]
    if style == "short":
        return ":".join(f"{g:x}" for g in groups)
    v4 = ipaddress.IPv4Address(a.packed[12:])
    return ":".join(f"{g:x}" for g in groups[:6]) + ":" + str(v4)


ports = st.integers(0, 65535)


@st.composite
def v1_headers(draw: Any) -> bytes:
    proto = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN", "UNKNOWN-short"]))
    if proto == "UNKNOWN-short":
        return b"PROXY UNKNOWN\r\n"
    addr = ipv4s if proto == "TCP4" else ipv6_texts()
    data = v1(proto, draw(addr), draw(addr), draw(ports), draw(ports))
    if len(data) > 107:         # two long dotted-quad tails
        data = v1(proto, "::1", draw(addr), draw(ports), draw(ports))
    return data


tlv_values = st.binary(max_size=40)


@st.composite
def tlv_areas(draw: Any) -> bytes:
    area = b""
    singles = set()
    for _ in range(draw(st.integers(0, 5))):
        t = draw(st.sampled_from([PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP,
                                  PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL, 0x30, 0xE0, 0xF8]))
        if t in singles:
            continue
        if t in (PP2_TYPE_AUTHORITY, PP2_TYPE_SSL):
            singles.add(t)
        if t == PP2_TYPE_SSL:
            subs = draw(st.lists(st.tuples(st.integers(0x21, 0x25), tlv_values), max_size=3))
            area += ssl_tlv(draw(st.integers(0, 7)), draw(st.integers(0, 2**32 - 1)), subs)
        else:
            area += tlv(t, draw(tlv_values))
    return area


@st.composite
def v2_headers(draw: Any) -> bytes:
    fam = draw(st.sampled_from(sorted(FAMILY_BYTES.values())))
    command = draw(st.sampled_from([PROXY, PROXY, LOCAL]))
    src = dst = None
    if fam >> 4 == 1:
        src = (draw(ipv4s), draw(ports))
        dst = (draw(ipv4s), draw(ports))
    elif fam >> 4 == 2:
        src = (str(draw(st.ip_addresses(v=6))), draw(ports))
        dst = (str(draw(st.ip_addresses(v=6))), draw(ports))
    elif fam >> 4 == 3:
        path = st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-", max_size=107).map(str.encode)
        src = draw(st.one_of(path, path.map(lambda p: b"\0" + p[:100] if p else b"")))
        dst = draw(path)
    return v2(command, fam, tlvs=draw(tlv_areas()), src=src, dst=dst, crc=draw(st.booleans()))


headers = st.one_of(v1_headers(), v2_headers())

INSERTS = [b" ", b"\r\n", b"\r", b"\n", b"\0", b":", b"::", b".", b"0", b"\t", b"+", b"%"]


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(headers))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "flip", "length", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "set" and data:
            data[i] = draw(st.one_of(st.integers(0, 255), st.sampled_from(b"\r\n\x00 :.0")))
        elif kind == "insert":
            data[i:i] = draw(st.sampled_from(INSERTS))
        elif kind == "delete" and data:
            del data[i:i + draw(st.integers(1, 3))]
        elif kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "length" and data[:12] == SIG and len(data) >= 16:
            n = struct.unpack_from("!H", data, 14)[0] + draw(st.integers(-4, 4))
            data[14:16] = struct.pack("!H", max(0, min(n, 0xFFFF)))
        elif kind == "truncate":
            del data[i:]
    return bytes(data)


@scaled(400)
@given(headers)
def test_valid_headers_are_accepted_as_the_oracle_reads_them(data: bytes) -> None:
    assert differential(data) == len(data)


@scaled(300)
@given(headers, st.binary(max_size=20))
def test_payload_after_the_header_is_not_read(data: bytes, payload: bytes) -> None:
    assert parse(data + payload) == parse(data)


@scaled(800)
@given(mutated())
def test_mutated_headers_never_accepted_unlike_the_oracle(data: bytes) -> None:
    differential(data)


@scaled(150)
@given(st.one_of(mutated(), headers))
def test_every_split_agrees_with_at_once(data: bytes) -> None:
    assert_incremental_agrees(data)


@scaled(100)
@given(st.one_of(mutated(), headers), st.integers(core.PROXY_MIN_MAX_LEN, 400))
def test_a_tighter_bound_only_adds_toolong(data: bytes, max_len: int) -> None:
    tight = assert_incremental_agrees(data, max_len)
    loose = parse(data)
    assert tight == loose or (tight[0] == TOOLONG and data[:12] == SIG)


@scaled(200)
@given(st.one_of(mutated(), headers, st.binary(max_size=40)), st.binary(min_size=300,
                                                                         max_size=300),
       st.integers(core.PROXY_MIN_MAX_LEN, 300))
def test_max_len_bytes_always_decide(data: bytes, filler: bytes, max_len: int) -> None:
    """A buffer of max_len bytes is enough: the result is never 0 then."""
    data = (data + filler)[:max_len]
    assert parse(data, max_len)[0] != 0
    assert parse(data + b"\0" * (4096 - len(data)))[0] != 0


@scaled(200)
@given(st.builds(lambda fam, src, dst: v1(fam, src, dst, 1, 2),
                 st.sampled_from(["TCP6"]), ipv6_texts(), ipv6_texts()))
def test_ipv6_text_matches_ipaddress(data: bytes) -> None:
    rc, h = parse(data)
    if len(data) > 107:
        assert rc == TOOLONG
        return
    assert rc == len(data) and h is not None
    src, dst = data.split(b" ")[2:4]
    assert ipaddress.ip_address(h["src"][0]) == ipaddress.ip_address(src.decode())
    assert ipaddress.ip_address(h["dst"][0]) == ipaddress.ip_address(dst.decode())


# ---------------------------------------------------------------------------
# The saved corpus (also the fuzzer's seed corpus)

def corpus_files() -> List[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_file())


def test_corpus_is_there() -> None:
    files = corpus_files()
    assert len(files) >= 100
    kinds = {p.name.split("-", 1)[0] for p in files}
    assert set(NAMES.values()) <= kinds


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_case(path: Path) -> None:
    """Each file's name says what it must give: ok (accepted; the payload,
    if any, follows), inc (undecided), or the error's name."""
    data = path.read_bytes()
    kind = path.name.split("-", 1)[0]
    rc, _ = assert_incremental_agrees(data)
    differential(data)
    if kind == "ok":
        assert rc > 0
    else:
        assert NAMES[rc] == kind, (rc, kind)
