"""The HTTP/1.1 request-head parser, chunked decoder and unquote of src/fa_http.c,
through fastaccept._core.

Every rule of src/fa_http.h has a case here with its status; the saved corpus
(tests/http/corpus/, also the fuzzer's seeds) is replayed; and hypothesis
builds valid requests, mutates them, and checks each against two oracles,
httptools (llhttp) and h11: whatever fastaccept accepts, both must accept,
with the same method, target, version, every header (name and value) and the
same body framing (the same body, and the pipelined request after it found
at the same place). Feeding a head in pieces must give what feeding it at
once gives.

Where fastaccept rejects what an oracle accepts (stricter on purpose; the
header comment of src/fa_http.h gives the reasons). Measured on this
module's tables with httptools 0.9 and h11 0.16:
  both    "#" in the request-target; "*" except as exactly "*" for OPTIONS;
          CONNECT with anything but host ":" port, and authority-form for
          other methods (h11); userinfo "@" or an empty authority in
          absolute-form; a Content-Length above 2^63-1 (llhttp takes 64 bits,
          h11 any size); whitespace after the last Transfer-Encoding coding
          ("chunked "); Transfer-Encoding in HTTP/1.0; Host values outside
          the uri-host and port characters; a Connection element that is
          not a token; HTTP/2.0 and HTTP/0.9 (505).
  llhttp  runs of SP in the request line, and a request line without a
          version (llhttp takes "GET /" as HTTP/0.9); a bare CR or LF before
          the request line (llhttp skips any); an HTTP/1.1 request without
          Host, or any request with two (llhttp does not look at Host); a
          coding before chunked ("gzip, chunked": 501 here); empty elements
          and parameters in Transfer-Encoding.
  h11     bare LF line ends; CTLs in a value other than the NUL, CR, LF, VT
          and FF that h11 refuses (SOH, ESC, DEL...); a target neither in
          origin-form nor absolute-form (h11 takes any VCHAR), malformed
          absolute-form ("http:/a", "1http://a", a scheme with other than
          letters: llhttp refuses those too); HTTP/1.2 and HTTP/3.1
          (505); obs-fold (h11 unfolds it); equal Content-Length values
          repeated or in a list (h11 merges them); Transfer-Encoding with
          trailing HTAB; Transfer-Encoding together with Content-Length
          (h11 lets chunked win); "5 \\r\\n", whitespace after a chunk size
          that does not lead to ";".
Where an oracle is stricter than fastaccept, and how the comparison allows it:
  llhttp  rejects methods outside its built-in table (RFC 9110 §9.1: any
          token is a method; the application answers 501): llhttp is not
          consulted for such a method (llhttp_knows_method).
  llhttp  rejects BWS inside chunk extensions ("5 ;a=b", "5;a = b"), which
          the RFC 9112 §7.1.1 grammar allows: not used in the bodies the
          differential tests send; the decoder's own tests cover it.
  h11     rejects empty lines before the request line, which RFC 9112 §2.2
          says a server SHOULD skip: they are stripped before h11 sees them.
Where the oracles report differently, and how the comparison normalises:
  llhttp  keeps the trailing OWS of a field value; fastaccept's value
          excludes it (RFC 9112 §5): compared after stripping it.
  h11     lower-cases Transfer-Encoding values: compared in lower case.
  both    treat Upgrade in HTTP/1.0 as an upgrade; fastaccept ignores it
          (RFC 9110 §7.8: MUST ignore): upgrade is compared for HTTP/1.1 only.
  h11     never keeps an HTTP/1.0 connection alive, and takes an Upgrade
          field without "Connection: upgrade" as a proposal to switch
          (RFC 9110 §7.8 needs both): keep_alive and upgrade are compared
          with h11 for HTTP/1.1 requests without Upgrade only (with llhttp
          for all).
  llhttp  lets keep-alive win over close in an HTTP/1.0 request that lists
          both; fastaccept closes: keep_alive is not compared for those.
  llhttp  httptools skips the body of an upgrade request (its
          on_headers_complete asks llhttp to), and llhttp takes Upgrade in
          HTTP/1.0 as one too: the body of an upgrade is compared with h11
          only.

Hypothesis runs the "ci" profile (derandomized, bounded example counts) by
default; FA_HYPOTHESIS_PROFILE=dig runs many random examples.
"""
from __future__ import annotations

import string
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fa_http_oracles import Message, h11_parse, llhttp, llhttp_knows_method
from fastaccept import _core as core
from fa_testutil import scaled

CORPUS = Path(__file__).resolve().parent / "corpus"

# ---------------------------------------------------------------------------
# helpers

HOST = b"Host: a\r\n"

Result = Tuple[int, Optional[Dict[str, Any]]]


def req(line: bytes = b"GET / HTTP/1.1", *fields: bytes, host: bool = True) -> bytes:
    """A head: the request line, Host (unless host=False), the fields, CRLF."""
    head = line + b"\r\n" + (HOST if host else b"")
    return head + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def parse(data: bytes, **limits: int) -> Result:
    return core.parse_request_head(data, **limits)


def status(data: bytes, **limits: int) -> int:
    return parse(data, **limits)[0]


def parse_pieces(data: bytes, cuts: Sequence[int], **limits: int) -> Result:
    """Feed data to a HeadParser split at cuts; the first final result, or
    the last (0, None)."""
    parser = core.HeadParser(**limits)
    result: Result = (0, None)
    prev = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        result = parser.feed(data[prev:cut])
        prev = cut
        if result[0] != 0:
            break
    return result


def parse_bytewise(data: bytes, **limits: int) -> Tuple[Result, int]:
    """Feed data one byte at a time: (first final result, bytes fed by then)."""
    parser = core.HeadParser(**limits)
    for i in range(len(data)):
        result = parser.feed(data[i:i + 1])
        if result[0] != 0:
            return result, i + 1
    return (0, None), len(data)


def assert_incremental_agrees(data: bytes, **limits: int) -> Result:
    """Byte-at-a-time feeding gives what one call gives, and a complete head
    is reported exactly when its last byte arrives."""
    once = parse(data, **limits)
    (result, fed) = parse_bytewise(data, **limits)
    assert result == once, (data, once, result)
    if once[0] > 0:
        assert fed == once[0]
    return once


def decode_chunked(body: bytes, max_body: int = 1 << 20,
                   cuts: Sequence[int] = ()) -> Tuple[bytes, int, bool]:
    """Feed body to a ChunkedDecoder split at cuts: (data, consumed, done).
    Raises HTTPError as the decoder does."""
    dec = core.ChunkedDecoder(max_body)
    out, consumed, done = [], 0, False
    prev = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(body))) + [len(body)]:
        data, used, done = dec.feed(body[prev:cut])
        out.append(data)
        consumed += used
        if done:
            break
        assert used == cut - prev
        prev = cut
    assert dec.done == done
    return b"".join(out), consumed, done


def chunked_status(body: bytes, max_body: int = 1 << 20) -> int:
    """0 done, 1 incomplete, or the HTTPError status; the same fed byte by byte."""
    def run(cuts: Sequence[int]) -> int:
        try:
            _, _, done = decode_chunked(body, max_body, cuts)
        except core.HTTPError as e:
            return e.status
        return 0 if done else 1
    once = run(())
    assert run(range(len(body))) == once, body
    return once


# ---------------------------------------------------------------------------
# What a parsed head reports

def test_simple_get_fields_and_offsets() -> None:
    data = (b"GET /p/a%20th?q=1&r=%41 HTTP/1.1\r\nHost: example.com:8080\r\n"
            b"User-Agent:  x/1 (y; z)\t \r\nX-Empty:\r\nX-Tab:\tv\tw\t\r\n\r\nBODY")
    rc, head = parse(data)
    assert rc == len(data) - 4
    assert head == {
        "method": "GET", "target": "/p/a%20th?q=1&r=%41", "path": "/p/a%20th",
        "query": "q=1&r=%41", "version": "HTTP/1.1",
        "headers": [(b"Host", b"example.com:8080"), (b"User-Agent", b"x/1 (y; z)"),
                    (b"X-Empty", b""), (b"X-Tab", b"v\tw")],
        "content_length": None, "chunked": False, "keep_alive": True,
        "expect_continue": False, "upgrade": False,
    }


def test_query_edge_cases() -> None:
    assert parse(req(b"GET /? HTTP/1.1"))[1]["query"] == ""
    head = parse(req(b"GET /a?b?c HTTP/1.1"))[1]
    assert (head["path"], head["query"]) == ("/a", "b?c")
    head = parse(req(b"GET http://h/x?y HTTP/1.1"))[1]
    assert (head["path"], head["query"]) == ("http://h/x", "y")


def test_leading_empty_lines_are_skipped_and_counted() -> None:
    data = b"\r\n\r\n" + req()
    rc, head = parse(data)
    assert rc == len(data) and head["method"] == "GET"
    assert assert_incremental_agrees(data)[0] == len(data)


@pytest.mark.parametrize("data, status_", [
    (b"\r\n", 0), (b"\r\n\r\n\r\n", 0), (b"\r", 0), (b"GET / HTTP/1.1\r\nHost: a\r\n", 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), (b"", 0),
])
def test_incomplete(data: bytes, status_: int) -> None:
    assert assert_incremental_agrees(data)[0] == status_


def test_bytes_like_inputs() -> None:
    data = req()
    assert parse(bytearray(data)) == parse(data) == parse(memoryview(data))


def test_pipelined_request_after_head_is_not_read() -> None:
    first = req(b"GET /1 HTTP/1.1")
    rc, head = parse(first + b"GARBAGE\x00\n\r")
    assert rc == len(first) and head["target"] == "/1"


# ---------------------------------------------------------------------------
# Every rule, each rejection with its status, at once and a byte at a time

def H(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return req(line, *fields)


REJECTIONS = [
    # -- line ends and control characters
    ("bare LF ends the request line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("bare LF ends a field", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    ("bare LF ends the head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    ("bare LF as a leading empty line", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare LF inside a value", H(b"X: a\nb"), 400),
    ("bare CR inside a value", H(b"X: a\rb"), 400),
    ("bare CR inside the request line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare CR before CRLF", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),
    ("CR CR LF ends the head", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400),
    ("NUL in the method", b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("NUL in the target", b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("NUL in a name", H(b"X\x00: y"), 400),
    ("NUL in a value", H(b"X: a\x00b"), 400),
    ("SOH in a value", H(b"X: \x01"), 400),
    ("VT in a value", H(b"X: a\x0bb"), 400),
    ("FF in a value", H(b"X: a\x0cb"), 400),
    ("ESC in a value", H(b"X: \x1b[0m"), 400),
    ("DEL in a value", H(b"X: a\x7fb"), 400),
    ("DEL in the target", b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("HTAB between method and target", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("HTAB before the version", b"GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", 400),
    # -- request line
    ("two SP after the method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("two SP before the version", b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("SP before the method", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("SP after the version", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    ("no version", b"GET /\r\nHost: a\r\n\r\n", 400),
    ("no target", b"GET HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("a fourth part", b"GET / x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method not a token", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method with obs-text", b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target with obs-text", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target with a fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target neither / nor absolute", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk for GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk with more", b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("authority-form for GET", b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT with origin-form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT with absolute-form", b"CONNECT http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT without a port", b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT with an empty port", b"CONNECT a: HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT with an empty host", b"CONNECT :80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT with a bad port", b"CONNECT a:8x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT with userinfo", b"CONNECT u@a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, empty authority", b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, no authority", b"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form with userinfo", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, one slash", b"GET http:/a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, digit scheme", b"GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, empty scheme", b"GET ://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, scheme with +", b"GET coap+tcp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, scheme with digit", b"GET h2://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("absolute-form, bad authority", b"GET http://a\\b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("version HTTP/1.2", req(b"GET / HTTP/1.2"), 505),
    ("version HTTP/2.0", req(b"GET / HTTP/2.0"), 505),
    ("version HTTP/0.9", req(b"GET / HTTP/0.9"), 505),
    ("version HTTP/3.1", req(b"GET / HTTP/3.1"), 505),
    ("version lower case", req(b"GET / http/1.1"), 400),
    ("version HTTP/1", req(b"GET / HTTP/1"), 400),
    ("version HTTP/1.10", req(b"GET / HTTP/1.10"), 400),
    ("version HTTP/11", req(b"GET / HTTP/11"), 400),
    ("version HTTP/a.b", req(b"GET / HTTP/a.b"), 400),
    ("version HTTP/1.x", req(b"GET / HTTP/1.x"), 400),
    ("version HTTPS/1.1", req(b"GET / HTTPS/1.1"), 400),
    ("version with leading zero", req(b"GET / HTTP/01.1"), 400),
    # -- field lines
    ("SP before the colon", H(b"X : y"), 400),
    ("HTAB before the colon", H(b"X\t: y"), 400),
    ("empty name", H(b": y"), 400),
    ("name not a token", H(b"X(y): z"), 400),
    ("name with SP", H(b"X y: z"), 400),
    ("name with obs-text", H(b"X\xe9: z"), 400),
    ("no colon", H(b"Xyz"), 400),
    ("obs-fold with SP", H(b"X: a", b" b"), 400),
    ("obs-fold with HTAB", H(b"X: a", b"\tb"), 400),
    ("whitespace before the first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    # -- Content-Length
    ("Content-Length +1", H(b"Content-Length: +1"), 400),
    ("Content-Length -1", H(b"Content-Length: -1"), 400),
    ("Content-Length 1 2", H(b"Content-Length: 1 2"), 400),
    ("Content-Length 0x10", H(b"Content-Length: 0x10"), 400),
    ("Content-Length 1.0", H(b"Content-Length: 1.0"), 400),
    ("Content-Length empty", H(b"Content-Length:"), 400),
    ("Content-Length only OWS", H(b"Content-Length: \t "), 400),
    ("Content-Length 2^63", H(b"Content-Length: 9223372036854775808"), 400),
    ("Content-Length 20 digits", H(b"Content-Length: 99999999999999999999"), 400),
    ("Content-Length list, equal", H(b"Content-Length: 5, 5"), 400),
    ("Content-Length list, no OWS", H(b"Content-Length: 5,5"), 400),
    ("Content-Length list, differing", H(b"Content-Length: 5, 6"), 400),
    ("Content-Length twice, equal", H(b"Content-Length: 5", b"Content-Length: 5"), 400),
    ("Content-Length twice, differing", H(b"Content-Length: 5", b"content-length: 6"), 400),
    ("Content-Length Arabic-Indic digit", H("Content-Length: \u0661".encode()), 400),
    # -- Transfer-Encoding
    ("TE xchunked", H(b"Transfer-Encoding: xchunked"), 400),
    ("TE chunkedx", H(b"Transfer-Encoding: chunkedx"), 400),
    ("TE chunked, identity", H(b"Transfer-Encoding: chunked, identity"), 400),
    ("TE identity", H(b"Transfer-Encoding: identity"), 400),
    ("TE gzip", H(b"Transfer-Encoding: gzip"), 400),
    ("TE chunked, gzip", H(b"Transfer-Encoding: chunked, gzip"), 400),
    ("TE gzip, chunked", H(b"Transfer-Encoding: gzip, chunked"), 501),
    ("TE gzip then chunked, two lines",
     H(b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"), 501),
    ("TE chunked, chunked", H(b"Transfer-Encoding: chunked, chunked"), 400),
    ("TE chunked twice, two lines",
     H(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
    ("TE chunked then gzip, two lines",
     H(b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"), 400),
    ("TE with a parameter", H(b"Transfer-Encoding: chunked;q=1"), 400),
    ("TE gzip with a parameter", H(b"Transfer-Encoding: gzip;level=1, chunked"), 400),
    ("TE trailing comma", H(b"Transfer-Encoding: chunked,"), 400),
    ("TE leading comma", H(b"Transfer-Encoding: , chunked"), 400),
    ("TE empty element", H(b"Transfer-Encoding: gzip,,chunked"), 400),
    ("TE empty", H(b"Transfer-Encoding:"), 400),
    ("TE chunk ed", H(b"Transfer-Encoding: chunk ed"), 400),
    ("TE quoted", H(b'Transfer-Encoding: "chunked"'), 400),
    ("TE with VT", H(b"Transfer-Encoding: \x0bchunked"), 400),
    ("TE with FF", H(b"Transfer-Encoding: chunked\x0c"), 400),
    ("TE with NUL", H(b"Transfer-Encoding: chunked\x00"), 400),
    ("TE with trailing HTAB", H(b"Transfer-Encoding: chunked\t"), 400),
    ("TE with trailing SP", H(b"Transfer-Encoding: chunked "), 400),
    ("TE with trailing OWS", H(b"Transfer-Encoding: chunked \t "), 400),
    ("TE with obs-text", H(b"Transfer-Encoding: chunked\xa0"), 400),
    ("TE SP before the colon", H(b"Transfer-Encoding : chunked"), 400),
    ("TE name with NUL", H(b"Transfer-Encoding\x00: chunked"), 400),
    ("TE name with SP inside", H(b"Transfer Encoding: chunked"), 400),
    ("TE obs-folded", H(b"Transfer-Encoding:", b" chunked"), 400),
    ("TE with Content-Length", H(b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400),
    ("Content-Length with TE", H(b"Content-Length: 0", b"Transfer-Encoding: chunked"), 400),
    ("TE in HTTP/1.0", req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"), 400),
    # -- Host
    ("HTTP/1.1 without Host", req(host=False), 400),
    ("two Host fields", H(b"Host: b"), 400),
    ("two equal Host fields", H(b"Host: a"), 400),
    ("two Host fields, HTTP/1.0", req(b"GET / HTTP/1.0", b"Host: a", b"host: a"), 400),
    ("Host with SP", req(b"GET / HTTP/1.1", b"Host: a b", host=False), 400),
    ("Host with /", req(b"GET / HTTP/1.1", b"Host: a/b", host=False), 400),
    ("Host with userinfo", req(b"GET / HTTP/1.1", b"Host: u@a", host=False), 400),
    ("Host with a quote", req(b"GET / HTTP/1.1", b'Host: "a"', host=False), 400),
    ("Host with obs-text", req(b"GET / HTTP/1.1", b"Host: \xe9", host=False), 400),
    # -- Connection
    ("Connection not a token", H(b"Connection: keep alive"), 400),
    ("Connection with a parameter", H(b"Connection: close;x=1"), 400),
    # -- request smuggling staples (see also test_smuggling_cases)
    ("CL.TE", H(b"Content-Length: 6", b"Transfer-Encoding: chunked"), 400),
    ("TE.CL", H(b"Transfer-Encoding: chunked", b"Content-Length: 6"), 400),
]


@pytest.mark.parametrize("data, expected", [pytest.param(d, s, id=i) for i, d, s in REJECTIONS])
def test_rejections(data: bytes, expected: int) -> None:
    assert assert_incremental_agrees(data)[0] == -expected


ACCEPTED = [
    ("CONNECT authority-form", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
    ("CONNECT IPv6", b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n"),
    ("OPTIONS *", req(b"OPTIONS * HTTP/1.1")),
    ("OPTIONS origin-form", req(b"OPTIONS /x HTTP/1.1")),
    ("absolute-form", req(b"GET http://a.example:80/x?y HTTP/1.1")),
    ("absolute-form without path", req(b"GET https://a.example HTTP/1.1")),
    ("absolute-form with query only", req(b"GET http://a?x HTTP/1.1")),
    ("absolute-form other scheme", req(b"GET coap://h/ HTTP/1.1")),
    ("origin-form //", req(b"GET //x HTTP/1.1")),
    ("every VCHAR but # in the target",
     req(b"GET /" + bytes(c for c in range(0x21, 0x7f) if c != 0x23) + b" HTTP/1.1")),
    ("any token method", req(b"X-Custom!#$%&'*+-.^_`|~ / HTTP/1.1")),
    ("lower-case method", req(b"get / HTTP/1.1")),
    ("HTTP/1.0 without Host", req(b"GET / HTTP/1.0", host=False)),
    ("empty Host", req(b"GET / HTTP/1.1", b"Host:", host=False)),
    ("Host IPv6 with port", req(b"GET / HTTP/1.1", b"Host: [fe80::1%25eth0]:8080", host=False)),
    ("Host sub-delims", req(b"GET / HTTP/1.1", b"Host: a!$&'()*+,;=-._~b", host=False)),
    ("host in lower and upper case", req(b"GET / HTTP/1.1", b"hOsT: a", host=False)),
    ("obs-text in a value", H(b"X: caf\xc3\xa9 \xff")),
    ("HTAB inside a value", H(b"X: a\t\tb")),
    ("OWS around a value", H(b"X:\t  a  \t")),
    ("Content-Length 0", H(b"Content-Length: 0")),
    ("Content-Length with leading zeros", H(b"Content-Length: 0005")),
    ("Content-Length 2^63-1", H(b"Content-Length: 9223372036854775807")),
    ("Content-Length with OWS", H(b"Content-Length: \t5\t ")),
    ("TE chunked", H(b"Transfer-Encoding: chunked")),
    ("TE CHUNKED", H(b"Transfer-Encoding: CHUNKED")),
    ("TE with HTAB after the colon", H(b"Transfer-Encoding:\tchunked")),
    ("TE with leading OWS", H(b"Transfer-Encoding: \t chunked")),
    ("Connection with empty elements", H(b"Connection: , close,,")),
    ("Connection with other tokens", H(b"Connection: TE, x-foo, close")),
]


@pytest.mark.parametrize("data", [pytest.param(d, id=i) for i, d in ACCEPTED])
def test_accepted(data: bytes) -> None:
    assert assert_incremental_agrees(data)[0] == len(data)


def flags(*fields: bytes, line: bytes = b"GET / HTTP/1.1", host: bool = True) -> Dict[str, Any]:
    rc, head = parse(req(line, *fields, host=host))
    assert rc > 0, rc
    return {k: head[k] for k in ("content_length", "chunked", "keep_alive",
                                 "expect_continue", "upgrade")}


@pytest.mark.parametrize("fields, line, expected", [
    ((), b"GET / HTTP/1.1", dict(keep_alive=True)),
    ((), b"GET / HTTP/1.0", dict(keep_alive=False)),
    ((b"Connection: close",), b"GET / HTTP/1.1", dict(keep_alive=False)),
    ((b"Connection: CLOSE",), b"GET / HTTP/1.1", dict(keep_alive=False)),
    ((b"Connection: keep-alive",), b"GET / HTTP/1.0", dict(keep_alive=True)),
    ((b"connection: Keep-Alive",), b"GET / HTTP/1.0", dict(keep_alive=True)),
    ((b"Connection: keep-alive, close",), b"GET / HTTP/1.0", dict(keep_alive=False)),
    ((b"Connection: keep-alive", b"Connection: close"), b"GET / HTTP/1.1", dict(keep_alive=False)),
    ((b"Connection: x-close",), b"GET / HTTP/1.1", dict(keep_alive=True)),
    ((b"Connection: keep-alivex",), b"GET / HTTP/1.0", dict(keep_alive=False)),
    ((b"Expect: 100-continue",), b"GET / HTTP/1.1", dict(expect_continue=True)),
    ((b"Expect: 100-Continue",), b"GET / HTTP/1.1", dict(expect_continue=True)),
    ((b"Expect: 100-continue",), b"GET / HTTP/1.0", dict(expect_continue=False, keep_alive=False)),
    ((b"Expect: 100-continuex",), b"GET / HTTP/1.1", dict(expect_continue=False)),
    ((b"Expect: 100-continue, x",), b"GET / HTTP/1.1", dict(expect_continue=False)),
    ((b"Connection: Upgrade", b"Upgrade: websocket"), b"GET / HTTP/1.1", dict(upgrade=True)),
    ((b"Upgrade: h2c", b"Connection: keep-alive, upgrade"), b"GET / HTTP/1.1",
     dict(upgrade=True)),
    ((b"Connection: upgrade",), b"GET / HTTP/1.1", dict(upgrade=False)),
    ((b"Upgrade: websocket",), b"GET / HTTP/1.1", dict(upgrade=False)),
    ((b"Connection: upgrade", b"Upgrade: websocket"), b"GET / HTTP/1.0",
     dict(upgrade=False, keep_alive=False)),
    ((b"Content-Length: 42",), b"POST / HTTP/1.1", dict(content_length=42)),
    ((b"Content-Length: 0",), b"POST / HTTP/1.0", dict(content_length=0, keep_alive=False)),
    ((b"Transfer-Encoding: chunked",), b"POST / HTTP/1.1", dict(chunked=True)),
    ((b"Transfer-Encoding: Chunked", b"Connection: close"), b"POST / HTTP/1.1",
     dict(chunked=True, keep_alive=False)),
])
def test_flags(fields: Tuple[bytes, ...], line: bytes, expected: Dict[str, Any]) -> None:
    want = dict(content_length=None, chunked=False, keep_alive=True, expect_continue=False,
                upgrade=False)
    want.update(expected)
    assert flags(*fields, line=line) == want


# ---------------------------------------------------------------------------
# Request smuggling: each case with the status it gets, head and body

SMUGGLING = [
    # (id, head, chunked body or None, head status, body status)
    ("CL.TE", H(b"Content-Length: 13", b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.1"),
     None, 400, None),
    ("TE.CL", H(b"Transfer-Encoding: chunked", b"Content-Length: 3", line=b"POST / HTTP/1.1"),
     None, 400, None),
    ("TE.TE xchunked", H(b"Transfer-Encoding: xchunked"), None, 400, None),
    ("TE.TE chunked, identity", H(b"Transfer-Encoding: chunked, identity"), None, 400, None),
    ("TE.TE identity then chunked lines",
     H(b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked"), None, 501, None),
    ("TE.TE chunked then x lines",
     H(b"Transfer-Encoding: chunked", b"Transfer-Encoding: x"), None, 400, None),
    ("TE.TE leading SP", H(b"Transfer-Encoding:  chunked"), b"0\r\n\r\n", 0, 0),
    ("TE.TE HTAB", H(b"Transfer-Encoding:\tchunked"), b"0\r\n\r\n", 0, 0),
    ("TE.TE VT", H(b"Transfer-Encoding:\x0bchunked"), None, 400, None),
    ("TE.TE NBSP", H(b"Transfer-Encoding:\xa0chunked"), None, 400, None),
    ("TE.TE SP before colon", H(b"Transfer-Encoding : chunked"), None, 400, None),
    ("TE.TE HTAB before colon", H(b"Transfer-Encoding\t: chunked"), None, 400, None),
    ("TE.TE NUL in name", H(b"Transfer-Encoding\x00: chunked"), None, 400, None),
    ("TE.TE NUL in value", H(b"Transfer-Encoding: chunked\x00"), None, 400, None),
    ("TE.TE SP in name", H(b" Transfer-Encoding: chunked"), None, 400, None),
    ("TE.TE obs-fold", H(b"X: y", b" Transfer-Encoding: chunked"), None, 400, None),
    ("TE.TE quoted", H(b'Transfer-Encoding: "chunked"'), None, 400, None),
    ("TE.TE underscore name", H(b"Transfer_Encoding: chunked"), b"", 0, None),
    ("TE in HTTP/1.0", req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"), None, 400, None),
    ("CL twice, equal", H(b"Content-Length: 3", b"Content-Length: 3"), None, 400, None),
    ("CL twice, differing", H(b"Content-Length: 3", b"Content-Length: 30"), None, 400, None),
    ("CL list", H(b"Content-Length: 3, 30"), None, 400, None),
    ("CL +1", H(b"Content-Length: +1"), None, 400, None),
    ("CL -1", H(b"Content-Length: -1"), None, 400, None),
    ("CL overflow", H(b"Content-Length: 18446744073709551617"), None, 400, None),
    ("two Host", H(b"Host: evil"), None, 400, None),
    ("obs-fold", H(b"X: a", b"\tb"), None, 400, None),
    ("bare CR", H(b"X: a\rTransfer-Encoding: chunked"), None, 400, None),
    ("bare LF", H(b"X: a\nTransfer-Encoding: chunked"), None, 400, None),
    ("bare LF head end", b"GET / HTTP/1.1\r\nHost: a\n\nGET /2 HTTP/1.1\r\n", None, 400, None),
    # chunked bodies
    ("chunk-size overflow", H(b"Transfer-Encoding: chunked"), b"ffffffffffffffffff\r\n", 0, 413),
    ("chunk-size 2^64", H(b"Transfer-Encoding: chunked"), b"10000000000000000\r\n", 0, 413),
    ("chunk-size signed", H(b"Transfer-Encoding: chunked"), b"-1\r\n", 0, 400),
    ("chunk-size 0x", H(b"Transfer-Encoding: chunked"), b"0x5\r\nhello\r\n0\r\n\r\n", 0, 400),
    ("chunk-size SP before CRLF", H(b"Transfer-Encoding: chunked"), b"5 \r\nhello\r\n0\r\n\r\n",
     0, 400),
    ("chunk-size bare LF", H(b"Transfer-Encoding: chunked"), b"5\nhello\r\n0\r\n\r\n", 0, 400),
    ("chunk data bare LF", H(b"Transfer-Encoding: chunked"), b"5\r\nhello\n0\r\n\r\n", 0, 400),
    ("chunk data too long", H(b"Transfer-Encoding: chunked"), b"3\r\nhello\r\n0\r\n\r\n", 0, 400),
    ("chunk ext valid", H(b"Transfer-Encoding: chunked"),
     b'5;a=b;c="d;e\\"f" ;g\r\nhello\r\n0;last\r\n\r\n', 0, 0),
    ("chunk ext hiding CRLF in quotes", H(b"Transfer-Encoding: chunked"),
     b'5;a="\r\n0\r\n\r\n"\r\nhello\r\n0\r\n\r\n', 0, 400),
    ("chunk ext bare LF", H(b"Transfer-Encoding: chunked"), b"5;a\nhello\r\n0\r\n\r\n", 0, 400),
    ("chunk ext empty name", H(b"Transfer-Encoding: chunked"), b"5;=b\r\nhello\r\n0\r\n\r\n",
     0, 400),
    ("chunk ext unterminated quote", H(b"Transfer-Encoding: chunked"),
     b'5;a="b\r\nhello\r\n0\r\n\r\n', 0, 400),
    ("chunk ext NUL", H(b"Transfer-Encoding: chunked"), b"5;a\x00\r\nhello\r\n0\r\n\r\n", 0, 400),
    ("trailer valid", H(b"Transfer-Encoding: chunked"),
     b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-T:\r\n\r\n", 0, 0),
    ("trailer obs-fold", H(b"Transfer-Encoding: chunked"),
     b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n", 0, 400),
    ("trailer SP before colon", H(b"Transfer-Encoding: chunked"),
     b"5\r\nhello\r\n0\r\nX : a\r\n\r\n", 0, 400),
    ("trailer bare LF", H(b"Transfer-Encoding: chunked"), b"5\r\nhello\r\n0\r\nX: a\n\r\n", 0, 400),
    ("trailer no colon", H(b"Transfer-Encoding: chunked"), b"5\r\nhello\r\n0\r\nXa\r\n\r\n",
     0, 400),
    ("last chunk, bare LF end", H(b"Transfer-Encoding: chunked"), b"5\r\nhello\r\n0\r\n\n",
     0, 400),
]


@pytest.mark.parametrize("head, body, head_status, body_status",
                         [pytest.param(*c[1:], id=c[0]) for c in SMUGGLING])
def test_smuggling_cases(head: bytes, body: Optional[bytes], head_status: int,
                         body_status: Optional[int]) -> None:
    rc, parsed = assert_incremental_agrees(head)
    if head_status:
        assert rc == -head_status
        return
    assert rc == len(head)
    if body_status is None:
        return
    assert parsed["chunked"]
    assert chunked_status(body) == body_status


# ---------------------------------------------------------------------------
# Character classes: every byte in every position

TCHAR = set((string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~").encode())
VCHAR = set(range(0x21, 0x7f))
OBS_TEXT = set(range(0x80, 0x100))
HOST_CHARS = set((string.ascii_letters + string.digits + "-._~!$&'()*+,;=:[]%").encode())


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_in_each_position(byte: int) -> None:
    b = bytes([byte])

    def expect(data: bytes, accepted: bool) -> None:
        rc = status(data)
        assert (rc == len(data)) if accepted else (rc == -400), (data, rc)

    expect(req(b"G" + b + b"T / HTTP/1.1"), byte in TCHAR)
    expect(req(b"GET /a" + b + b"b HTTP/1.1"), byte in VCHAR and b != b"#")
    # ":" ends the name early, leaving a valid line
    expect(H(b"X" + b + b"Y: v"), byte in TCHAR or b == b":")
    expect(H(b"X: a" + b + b"b"), byte in VCHAR | OBS_TEXT | {0x20, 0x09})
    expect(req(b"GET / HTTP/1.1", b"Host: a" + b + b"b", host=False), byte in HOST_CHARS)


@pytest.mark.parametrize("byte, accepted", [
    (0x00, False), (0x01, False), (0x08, False), (0x0a, False), (0x0b, False), (0x0d, False),
    (0x1f, False), (0x7f, False), (0x09, True), (0x20, True), (0x21, True), (0x7e, True),
    (0x80, True), (0xff, True),
])
def test_byte_at_every_offset_of_a_long_line(byte: int, accepted: bool) -> None:
    """The scan for line ends takes eight bytes at a time: a byte must be
    judged alike at every offset within a word, and in the tail."""
    for offset in range(40):
        value = bytearray(b"v" * 40)
        value[offset] = byte
        data = H(b"X-Long: v" + bytes(value) + b"v")
        assert status(data) == (len(data) if accepted else -400), (offset, data)
        line = req(b"GET /" + b"p" * offset + bytes([byte]) + b"p" * (40 - offset) + b" HTTP/1.1")
        assert status(line) == (len(line) if accepted and byte not in (0x20, 0x09, 0x7f)
                                and byte < 0x80 else -400), (offset, line)


@pytest.mark.parametrize("value, expected", [
    (b"", b""), (b" ", b""), (b" \t ", b""), (b"a", b"a"), (b" a ", b"a"), (b"\ta\t", b"a"),
    (b"a b", b"a b"), (b"  a \t b  ", b"a \t b"), (b"\x80", b"\x80"), (b":", b":"),
])
def test_value_without_ows(value: bytes, expected: bytes) -> None:
    assert parse(H(b"X:" + value))[1]["headers"][1] == (b"X", expected)


# ---------------------------------------------------------------------------
# Limits: at and just past each bound, at once and a byte at a time

def line_of(n: int) -> bytes:
    """A request line of exactly n bytes."""
    prefix, suffix = b"GET /", b" HTTP/1.1"
    return prefix + b"a" * (n - len(prefix) - len(suffix)) + suffix


@pytest.mark.parametrize("limit", [32, 8192])
def test_request_line_limit(limit: int) -> None:
    assert assert_incremental_agrees(req(line_of(limit)), max_request_line=limit)[0] > 0
    assert assert_incremental_agrees(req(line_of(limit + 1)), max_request_line=limit)[0] == -414
    # early: no need to wait for the end of the line, let alone the head
    assert status(line_of(limit + 1)[:limit + 1], max_request_line=limit) == -414
    assert status(line_of(limit + 1)[:limit], max_request_line=limit) == 0
    # leading empty lines do not count
    assert status(b"\r\n" * 10 + req(line_of(limit)), max_request_line=limit) > 0
    result, fed = parse_bytewise(line_of(limit + 50), max_request_line=limit)
    assert result == (-414, None) and fed == limit + 1


def test_default_request_line_limit() -> None:
    assert status(req(line_of(8192))) > 0
    assert status(req(line_of(8193))) == -414


@pytest.mark.parametrize("limit", [0, 1, 5, 100])
def test_field_count_limit(limit: int) -> None:
    def head(n: int) -> bytes:
        return req(b"GET / HTTP/1.0", *[b"X-%d: v" % i for i in range(n)], host=False)
    rc, parsed = assert_incremental_agrees(head(limit), max_fields=limit)
    assert rc > 0 and len(parsed["headers"]) == limit
    assert assert_incremental_agrees(head(limit + 1), max_fields=limit)[0] == -431
    # early: the extra line is enough, the end of the head is not needed
    assert status(head(limit + 1)[:-2], max_fields=limit) == -431
    assert status(head(limit)[:-2], max_fields=limit) == 0


def test_default_field_count_limit() -> None:
    fields = [b"X-%d: v" % i for i in range(99)]
    assert status(req(b"GET / HTTP/1.1", *fields)) > 0
    assert status(req(b"GET / HTTP/1.1", *fields, b"X-Last: v")) == -431


@pytest.mark.parametrize("limit", [64, 1000, 65536])
def test_head_size_limit(limit: int) -> None:
    def head(n: int) -> bytes:
        base = req(b"GET / HTTP/1.1", b"X: ")
        return base[:-4] + b"v" * (n - len(base)) + b"\r\n\r\n"
    assert len(head(limit)) == limit
    assert assert_incremental_agrees(head(limit), max_head=limit)[0] == limit
    assert assert_incremental_agrees(head(limit + 1), max_head=limit)[0] == -431
    # early: max_head bytes without the end are enough to know
    assert status(head(limit + 10)[:limit], max_head=limit) == -431
    assert status(head(limit + 10)[:limit - 1], max_head=limit) == 0
    # bytes after a head that fits do not count
    assert status(head(limit) + b"x" * 100, max_head=limit) == limit
    # the final CRLF split by the bound
    assert status(head(limit + 1)[:limit], max_head=limit) == -431


def test_leading_empty_lines_count_against_max_head() -> None:
    data = req()
    assert status(b"\r\n" + data, max_head=len(data) + 2) > 0
    assert status(b"\r\n" + data, max_head=len(data) + 1) == -431
    assert status(b"\r\n" * 100, max_head=200) == -431
    assert status(b"\r\n" * 100, max_head=201) == 0


def test_incremental_scan_resumes_where_it_stopped() -> None:
    """A head fed a byte at a time is examined once: after each feed the
    scan stands at the end of what was fed (or on a CR waiting for its LF),
    so the work is O(n) in all, not O(n^2)."""
    data = req(b"GET / HTTP/1.1", *[b"X-%d: %s" % (i, b"v" * 500) for i in range(99)])
    parser = core.HeadParser()
    for i in range(len(data) - 1):
        assert parser.feed(data[i:i + 1]) == (0, None)
        assert parser.scanned in (i + 1, i), i
        assert parser.scanned == i + 1 or data[i:i + 1] == b"\r"
    assert parser.feed(data[-1:])[0] == len(data)
    assert parser.buffered == data
    # a final result is kept, later data ignored
    assert parser.feed(b"more")[0] == len(data)


# ---------------------------------------------------------------------------
# Chunked bodies

def test_chunked_simple_and_pipelined() -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert decode_chunked(body + b"NEXT") == (b"hello world", len(body), True)


@pytest.mark.parametrize("body, data", [
    (b"0\r\n\r\n", b""),
    (b"000\r\n\r\n", b""),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"0001\r\nx\r\n0\r\n\r\n", b"x"),
    (b"1;a\r\nx\r\n0\r\n\r\n", b"x"),
    (b"1;a=b\r\nx\r\n0\r\n\r\n", b"x"),
    (b'1;a="b c;d=e\\"\\\\"\r\nx\r\n0\r\n\r\n', b"x"),
    (b'1;a=""\r\nx\r\n0\r\n\r\n', b"x"),
    (b"1;a=b;c;d=e\r\nx\r\n0;z=\"\xff\"\r\n\r\n", b"x"),
    (b"1 ;a\r\nx\r\n0\r\n\r\n", b"x"),          # BWS before ";" (RFC 9112 §7.1.1)
    (b"1\t; \ta \t= \tb\r\nx\r\n0\r\n\r\n", b"x"),
    (b'1;a="q" ;b\r\nx\r\n0\r\n\r\n', b"x"),
    (b"1\r\n\r\r\n0\r\n\r\n", b"\r"),           # data is data, whatever it holds
    (b"2\r\n\r\n\r\n0\r\n\r\n", b"\r\n"),
    (b"1\r\nx\r\n0\r\nA: b\r\nC-D:\te \xff\r\nE:\r\n\r\n", b"x"),
    # each size starts afresh: 40 one-digit sizes are not a 40-digit one
    (b"1\r\nx\r\n" * 40 + b"0\r\n\r\n", b"x" * 40),
    (b"00000000001\r\nx\r\n" * 20 + b"0\r\n\r\n", b"x" * 20),
])
def test_chunked_valid(body: bytes, data: bytes) -> None:
    assert decode_chunked(body) == (data, len(body), True)
    assert decode_chunked(body, cuts=range(len(body))) == (data, len(body), True)


@pytest.mark.parametrize("body", [
    b"\r\n", b"x\r\n", b";a\r\n", b" 1\r\n", b"1\n", b"1\rx", b"1\r\nxy", b"1\r\nx\n",
    b"1\r\nx\rx", b"1\r\nx\r\n\r\n", b"0\r\n\r\r", b"0\r\nX\r\n", b"0\r\n:x\r\n",
    b"0\r\n x: y\r\n", b"0\r\nX : y\r\n", b"0\r\nX: \x00\r\n", b"0\r\nX: \x7f\r\n",
    b"0\r\nX: y\n\r\n", b"0\r\nX: y\r\r\n", b"0\r\n\n", b"0\r\n\rx",
    b"1 \r\n", b"1\t\r\n", b"1;\r\n", b"1;=\r\n", b"1;a=\r\n", b"1;a =\r\n", b"1;a b\r\n",
    b"1;a=b c\r\n", b"1;a==b\r\n", b"1;a=\"b\r\n", b"1;a=\"b\"c\r\n", b"1;a=\"\x00\"\r\n",
    b"1;a=\"\\\x00\"\r\n", b"1;a=\"\x7f\"\r\n", b"1;a \r\n", b"1;a=b \r\n", b"1;a;\r\n",
    b"1;(\r\n", b"1;a=(\r\n", b"1;a\x00\r\n", b"1;a\n", b"-1\r\n", b"+1\r\n", b"0x1\r\n",
    b"1.0\r\n", b"\xff\r\n",
])
def test_chunked_malformed(body: bytes) -> None:
    assert chunked_status(body) == 400


def test_chunked_incomplete_and_sticky_error() -> None:
    dec = core.ChunkedDecoder(100)
    assert dec.feed(b"5\r\nhel") == (b"hel", 6, False)
    assert not dec.done and dec.body_len == 3
    assert dec.feed(b"lo\r\n0\r\n") == (b"lo", 7, False)
    assert dec.feed(b"\r\nrest") == (b"", 2, True)
    assert dec.done and dec.feed(b"more") == (b"", 0, True)
    dec = core.ChunkedDecoder(100)
    with pytest.raises(core.HTTPError) as e:
        dec.feed(b"z")
    assert e.value.status == 400 and isinstance(e.value, ValueError)
    with pytest.raises(core.HTTPError):
        dec.feed(b"0\r\n\r\n")      # an error stays


@pytest.mark.parametrize("max_body", [0, 1, 10, 1 << 20])
def test_chunked_max_body(max_body: int) -> None:
    def body(n: int) -> bytes:
        return b"%x\r\n%s\r\n0\r\n\r\n" % (n, b"x" * n) if n else b"0\r\n\r\n"
    assert chunked_status(body(max_body), max_body) == 0
    assert chunked_status(body(max_body + 1), max_body) == 413
    # over several chunks: the chunk that crosses the bound is refused
    split = b"1\r\nx\r\n" * max_body + b"1\r\nx\r\n0\r\n\r\n"
    if max_body < 100:
        assert chunked_status(split, max_body) == 413
    # early: the size line is enough, before any data arrives
    dec = core.ChunkedDecoder(max_body)
    with pytest.raises(core.HTTPError) as e:
        dec.feed(b"%x" % (max_body + 1))
    assert e.value.status == 413


@pytest.mark.parametrize("size, status_", [
    (b"f" * 16, 413), (b"f" * 17, 413), (b"f" * 18, 413), (b"1" + b"0" * 16, 413),
    (b"0" * 40 + b"1", 0), (b"8000000000000000", 413),
])
def test_chunk_size_overflow(size: bytes, status_: int) -> None:
    body = size + b"\r\n" + (b"x\r\n0\r\n\r\n" if status_ == 0 else b"")
    assert chunked_status(body, max_body=(1 << 63) - 1 if status_ == 0 else 1 << 40) == status_
    if status_:
        assert chunked_status(size + b"\r\n", max_body=(1 << 63) - 1) == 413


def test_chunk_line_and_trailer_bounds() -> None:
    at = b"1;" + b"a" * (core.HTTP_MAX_CHUNK_LINE - 2)
    assert chunked_status(at + b"\r\nx\r\n0\r\n\r\n") == 0
    assert chunked_status(at + b"a\r\nx\r\n0\r\n\r\n") == 400
    zeros = b"0" * core.HTTP_MAX_CHUNK_LINE
    assert chunked_status(zeros + b"\r\n\r\n") == 0
    assert chunked_status(zeros + b"0\r\n\r\n") == 400
    # the trailer section with its CRLFs and the final CRLF
    line = b"X: " + b"v" * (core.HTTP_MAX_TRAILER - 7) + b"\r\n"
    assert chunked_status(b"0\r\n" + line + b"\r\n") == 0
    assert chunked_status(b"0\r\n" + line[:3] + b"v" + line[3:] + b"\r\n") == 400


@scaled(100)
@given(st.lists(st.binary(max_size=300), max_size=6), st.data())
def test_chunked_roundtrip_any_split(chunks: List[bytes], data: st.DataObject) -> None:
    """Any body, encoded with any extensions and trailers, decodes to itself
    however it is split."""
    ext = st.sampled_from([b"", b";a", b";a=b", b';n="v \\" x"', b" ;x", b";a;b=c"])
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), data.draw(ext), c) for c in chunks if c)
    body += b"0%s\r\n%s\r\n" % (data.draw(ext), data.draw(st.sampled_from(
        [b"", b"A: b\r\n", b"X-1: \t\r\nY: z\r\n"])))
    expected = b"".join(chunks)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    assert decode_chunked(body + b"NEXT", cuts=cuts) == (expected, len(body), True)


# ---------------------------------------------------------------------------
# unquote

@pytest.mark.parametrize("data", [
    b"", b"%", b"%%", b"%4", b"%41", b"%4g", b"%g4", b"%%41", b"%4%41", b"a%2Fb%2fc", b"%ff%FF%fF",
    b"%00", b"100%", b"%41%", b"%\xff1", b"no escapes", b"%E2%82%AC", b"%+1", b"% 1",
])
def test_unquote_cases(data: bytes) -> None:
    assert core.unquote(data) == urllib.parse.unquote_to_bytes(data)


@scaled(300)
@given(st.one_of(st.binary(max_size=200),
                 st.text(alphabet="%0123456789abcdefABCDEFgG/ \x00+", max_size=60)
                 .map(lambda s: s.encode("latin-1"))))
def test_unquote_matches_urllib(data: bytes) -> None:
    assert core.unquote(data) == urllib.parse.unquote_to_bytes(data)
    assert len(core.unquote(data)) <= len(data)


def test_unquote_accepts_bytes_like() -> None:
    assert core.unquote(bytearray(b"%41")) == core.unquote(memoryview(b"%41")) == b"A"


# ---------------------------------------------------------------------------
# Arguments

@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(max_request_line=0), ValueError, "max_request_line"),
    (dict(max_request_line=2**31), ValueError, "max_request_line"),
    (dict(max_request_line=1.5), TypeError, "max_request_line"),
    (dict(max_fields=-1), ValueError, "max_fields"),
    (dict(max_fields=2**16 + 1), ValueError, "max_fields"),
    (dict(max_fields=True), TypeError, "max_fields"),
    (dict(max_head=0), ValueError, "max_head"),
    (dict(max_head="1"), TypeError, "max_head"),
])
def test_bad_limits(kwargs: Dict[str, Any], exc: type, word: str) -> None:
    with pytest.raises(exc, match=word):
        core.parse_request_head(b"", **kwargs)
    with pytest.raises(exc, match=word):
        core.HeadParser(**kwargs)


def test_bad_data() -> None:
    for call in (core.parse_request_head, core.unquote, core.HeadParser().feed,
                 core.ChunkedDecoder(1).feed):
        with pytest.raises(TypeError, match="data"):
            call("GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ValueError, match="max_body"):
        core.ChunkedDecoder(-1)
    with pytest.raises(ValueError, match="max_body"):
        core.ChunkedDecoder(2**63)
    with pytest.raises(TypeError, match="max_body"):
        core.ChunkedDecoder(None)


def test_many_fields_beyond_the_stack_buffer() -> None:
    fields = [b"X-%d: %d" % (i, i) for i in range(1000)]
    rc, head = parse(req(b"GET / HTTP/1.1", *fields), max_fields=1001)
    assert rc > 0 and head["headers"][1:] == [(b"X-%d" % i, b"%d" % i) for i in range(1000)]


# ---------------------------------------------------------------------------
# Differential: fastaccept against llhttp and h11

NEXT = b"GET /next HTTP/1.1\r\nHost: next.example\r\n\r\n"
CHUNKED_BODY = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n"
CHUNKED_DATA = b"hello world"
#: Longest Content-Length body the comparison sends; longer ones compare the head only.
MAX_CL_BODY = 4096


def compare(oracle: str, got: Optional[Message], head: Dict[str, Any],
            body: Optional[bytes], expect_next: bool, data: bytes) -> None:
    where = f"{oracle} on {data!r}"
    assert got is not None, f"{where}: fastaccept accepted, {oracle} rejected"
    assert got.method == head["method"].encode(), where
    assert got.target == head["target"].encode(), where
    assert "HTTP/" + got.version == head["version"], where
    headers = got.headers
    ours = head["headers"]
    if oracle == "llhttp":
        headers = [(n, v.rstrip(b" \t")) for n, v in headers]
    else:
        ours = [(n, v.lower() if n.lower() == b"transfer-encoding" else v) for n, v in ours]
    assert headers == ours, where
    v11 = head["version"] == "HTTP/1.1"
    if oracle == "llhttp" and got.upgrade and head["method"] != "CONNECT":
        # httptools skips the body of what llhttp takes as an upgrade (its
        # on_headers_complete asks it to), and stops there
        assert head["upgrade"] or not v11, where
        body = None
        expect_next = False
    if body is not None:
        assert got.complete and got.body == body, where
    if expect_next:
        assert got.next_target == b"/next", where
    if body is None or head["method"] == "CONNECT":
        return
    if oracle == "h11" and (not v11 or any(n.lower() == b"upgrade" for n, _ in ours)):
        return          # h11: no HTTP/1.0 keep-alive; Upgrade alone is a switch to it
    options = {t.strip(b" \t").lower() for n, v in ours if n.lower() == b"connection"
               for t in v.split(b",")}
    if not head["upgrade"] and not {b"close", b"keep-alive"} <= options:
        assert got.keep_alive == head["keep_alive"], where
    if v11:
        assert got.upgrade == head["upgrade"], where


def differential(data: bytes) -> int:
    """Parse data with fastaccept; when it accepts, both oracles must too, and
    agree. The body framing is compared by sending, after the head, the body
    fastaccept's framing says comes next and then a pipelined request, which
    each oracle must find right after that body. Returns fastaccept's rc."""
    rc, head = parse(data)
    assert parse_pieces(data, [len(data) // 3, len(data) // 2]) == (rc, head)
    if rc <= 0:
        return rc
    if head["chunked"]:
        body: Optional[bytes] = CHUNKED_BODY
        decoded: Optional[bytes] = CHUNKED_DATA
        assert decode_chunked(CHUNKED_BODY) == (CHUNKED_DATA, len(CHUNKED_BODY), True)
    elif head["content_length"] is None:
        body = decoded = b""
    elif head["content_length"] <= MAX_CL_BODY:
        body = decoded = b"b" * head["content_length"]
    else:
        body = decoded = None
    expect_next = (body is not None and head["keep_alive"] and not head["upgrade"]
                   and head["method"] != "CONNECT")
    # after a message that closes the connection, more data is an error to both
    stream = data[:rc] + (body or b"") + (NEXT if expect_next else b"")
    if llhttp_knows_method(head["method"].encode()):
        compare("llhttp", llhttp(stream), head, decoded, expect_next, data)
    compare("h11", h11_parse(stream), head, decoded,
            expect_next and head["version"] == "HTTP/1.1", data)
    return rc


# strategies: valid requests

TCHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PCHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%"
HOSTCHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:[]%"
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "PROPFIND", "TRACE"]

field_names = st.text(TCHARS, min_size=1, max_size=16).filter(lambda n: n.lower() not in SPECIAL)
value_words = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(c if c in VCHAR or c >= 0x80 else 0x61 for c in b))
ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])


@st.composite
def field_values(draw: Any) -> bytes:
    words = draw(st.lists(value_words, max_size=4))
    inner = b"".join(w + draw(st.sampled_from([b" ", b"\t", b"  "])) for w in words[:-1])
    return draw(ows) + inner + (words[-1] if words else b"") + draw(ows)


@st.composite
def targets(draw: Any) -> bytes:
    form = draw(st.sampled_from(["origin", "origin", "origin", "absolute"]))
    path = "/" + draw(st.text(PCHARS, max_size=24))
    if draw(st.booleans()):
        path += "?" + draw(st.text(PCHARS + "?", max_size=24))
    if form == "absolute":
        host = draw(st.text(string.ascii_lowercase + string.digits + "-.", min_size=1,
                            max_size=12))
        path = draw(st.sampled_from(["http", "https"])) + "://" + host + path
    return path.encode()


@st.composite
def requests(draw: Any) -> bytes:
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    method = draw(st.sampled_from(METHODS)).encode()
    if method == b"OPTIONS" and draw(st.booleans()):
        target = b"*"
    else:
        target = draw(targets())
    fields = [(draw(field_names).encode(), draw(field_values()))
              for _ in range(draw(st.integers(0, 6)))]
    if version == b"1.1" or draw(st.booleans()):
        host = draw(st.text(HOSTCHARS, max_size=20)).encode()
        fields.append((draw(st.sampled_from([b"Host", b"host", b"HOST"])),
                       draw(ows) + host + draw(ows)))
    framing = draw(st.sampled_from(["none", "cl", "chunked"] if version == b"1.1"
                                   else ["none", "cl"]))
    if framing == "cl":
        fields.append((b"Content-Length", b"%d" % draw(st.integers(0, 300))))
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", draw(st.sampled_from(
            [b"chunked", b"Chunked", b" chunked", b"\tchunked"]))))
    conn = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, x-foo",
                                 b"upgrade", b"TE, close"]))
    if conn is not None:
        fields.append((b"Connection", conn))
        if conn == b"upgrade" and draw(st.booleans()):
            fields.append((b"Upgrade", b"websocket"))
    if draw(st.booleans()):
        fields.append((b"Expect", b"100-continue"))
    fields = draw(st.permutations(fields))
    lead = b"\r\n" * draw(st.integers(0, 2))
    return (lead + method + b" " + target + b" HTTP/" + version + b"\r\n"
            + b"".join(n + b":" + v + b"\r\n" for n, v in fields) + b"\r\n")


# strategies: mutations

INSERTS = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"\r\n", b"\x7f", b"\x80", b"\x0b",
           b";", b"\"", b"=", b"#", b"@", b"?", b"/", b"*", b"\r\n\r\n", b"\r\n "]
SMUGGLE_LINES = [
    b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: 05", b"Content-Length: +5",
    b"Content-Length: 5, 5", b"Content-Length: 99999999999999999999",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, chunked", b"Transfer-Encoding: identity",
    b"Transfer-Encoding : chunked", b"Transfer-Encoding:\tchunked", b"Transfer-Encoding: ,chunked",
    b"Host: other", b"Host:", b"Connection: close", b"Connection: keep-alive",
    b"Connection: upgrade", b"Upgrade: h2c", b"Expect: 100-continue", b" folded", b"\tfolded",
    b"X-\x00: y", b"X: \x01",
]


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(requests()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "dup", "case", "line"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "set" and data:
            data[i] = draw(st.one_of(st.integers(0, 255), st.sampled_from(b"\r\n\x00 \t:,")))
        elif kind == "insert":
            data[i:i] = draw(st.sampled_from(INSERTS))
        elif kind == "delete" and data:
            del data[i:i + draw(st.integers(1, 3))]
        elif kind == "dup":
            lines = bytes(data).split(b"\r\n")
            j = draw(st.integers(0, len(lines) - 1))
            lines.insert(j, lines[j])
            data = bytearray(b"\r\n".join(lines))
        elif kind == "case":
            data[i:i + 8] = bytes(data[i:i + 8]).swapcase()
        elif kind == "line":
            lines = bytes(data).split(b"\r\n")
            j = draw(st.integers(1, max(1, len(lines) - 2)))
            lines.insert(j, draw(st.sampled_from(SMUGGLE_LINES)))
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@scaled(300)
@given(requests())
def test_valid_requests_are_accepted_as_the_oracles_read_them(data: bytes) -> None:
    assert differential(data) == len(data)


@scaled(600)
@given(mutated())
def test_mutated_requests_never_accepted_unlike_the_oracles(data: bytes) -> None:
    differential(data)


@scaled(200)
@given(st.one_of(mutated(), requests()), st.lists(st.integers(0, 400), max_size=10))
def test_pieces_agree_with_at_once(data: bytes, cuts: List[int]) -> None:
    assert parse_pieces(data, cuts) == parse(data)


@scaled(40)
@given(st.one_of(mutated(), requests()))
def test_every_split_agrees_with_at_once(data: bytes) -> None:
    once = parse(data)
    for k in range(len(data) + 1):
        assert parse_pieces(data, [k]) == once, k
    assert parse_bytewise(data)[0] == once


@scaled(100)
@given(st.one_of(mutated(), requests()),
       st.tuples(st.integers(1, 120), st.integers(0, 8), st.integers(1, 300)))
def test_tight_limits_incremental(data: bytes, limits: Tuple[int, int, int]) -> None:
    kw = dict(zip(("max_request_line", "max_fields", "max_head"), limits))
    rc = assert_incremental_agrees(data, **kw)[0]
    loose = status(data)
    # a tighter limit can only add a 414/431, never accept what was rejected
    if rc > 0:
        assert loose == rc
    elif loose > 0:
        assert rc in (0, -414, -431)


# ---------------------------------------------------------------------------
# The saved corpus (also the fuzzer's seed corpus)

def corpus_files() -> List[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_file())


def test_corpus_is_there() -> None:
    files = corpus_files()
    assert len(files) >= 50
    kinds = {p.name.split("-", 1)[0] for p in files}
    assert {"ok", "400", "414", "431", "501", "505", "b400", "b413"} <= kinds


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_case(path: Path) -> None:
    """Each file's name says what it must give: ok (head accepted and, if
    chunked, its body decoded), NNN (head rejected with NNN), bNNN (head
    accepted, chunked body rejected with NNN), inc (head incomplete)."""
    data = path.read_bytes()
    kind = path.name.split("-", 1)[0]
    rc, head = assert_incremental_agrees(data)
    if kind == "inc":
        assert rc == 0
        return
    if kind.isdigit():
        assert rc == -int(kind)
        return
    assert rc > 0, rc
    differential(data)
    if head["chunked"]:
        body = data[rc:]
        if kind == "ok":
            assert chunked_status(body) == 0
        else:
            assert kind[0] == "b" and chunked_status(body) == int(kind[1:])
    else:
        assert kind == "ok"
