/*
 * fa_http.h - strict HTTP/1.1 request-head parser, chunked body decoder and
 * percent-decoder, for the accept loop.
 *
 * The HTTP server parses request heads in C inside the accept loop, without
 * the GIL, before any worker thread wakes. So this code allocates nothing,
 * has no mutable globals and no locale, never calls back, and touches only
 * the caller's buffers: any number of threads may use it at once. Results
 * are offsets into the caller's buffer, not copies.
 *
 * Head parsing has two phases.
 *
 *  1. Finding the end (incremental). A head arrives in pieces; the caller
 *     calls fa_http_parse_head() with everything received so far and the
 *     same fa_http_scan each time. The scan resumes where the previous call
 *     stopped, so a head that arrives a byte at a time costs O(n) in all.
 *     It looks for line ends and rejects, as soon as they are seen: any CTL
 *     byte other than HTAB (NUL included) and DEL (400), a CR not followed by
 *     LF and an LF not preceded by CR (400), a request line longer than
 *     max_request_line (414), more than max_fields field lines (431), and
 *     max_head bytes without the end of the head (431). Runs of ordinary
 *     bytes are skipped eight at a time (a word-at-a-time test for a byte
 *     below 0x20 or equal to 0x7F), so a typical head costs about one
 *     instruction per byte here.
 *  2. Grammar (once, on the complete head). Request line, field lines and
 *     the framing and connection fields are checked against RFC 9112 and
 *     RFC 9110 with table-driven character classes. Phase 1 guarantees that
 *     every line ends in CRLF and holds no CTL but HTAB, so every scan here
 *     stops at a CR at the latest and none needs a bounds check of its own;
 *     field values need no per-byte check at all.
 * Both phases together take about 160 ns for a 430-byte browser GET head
 * with 9 fields (gcc -O2, one core of a 2-core x86-64 VM).
 *
 * What is accepted, and the strictness choices (RFC 9112 unless noted).
 * Where the RFC allows a recipient leniency that would let two parsers on a
 * path disagree about where a message ends (request smuggling) or what it
 * means, this parser takes the strict reading; each such choice is marked *.
 *
 *  Lines      CRLF only; a bare CR or bare LF anywhere is 400 *. No CTL other
 *             than HTAB anywhere, no DEL (400).
 *  Leading    empty lines (CRLF) before the request line are skipped (§2.2)
 *             and counted in head_len and against max_head.
 *  Request    method SP request-target SP HTTP-version, exactly one SP each
 *   line      (no HTAB or runs of SP, which §3 lets a server accept *).
 *             method: a non-empty token, case-sensitive; any token (the
 *             application answers 501 for what it does not implement).
 *             request-target: VCHAR only, and no "#" * (a fragment is never
 *             part of a request-target, and proxies disagree on cutting it).
 *             Its form must fit the method (§3.2):
 *               origin-form    "/" ...       any method but CONNECT
 *               absolute-form  scheme "://" authority [path/query]; the
 *                              scheme letters only * (RFC 3986 allows digits
 *                              "+-." after the first; no HTTP scheme has
 *                              them), a non-empty authority of the Host
 *                              characters below, so no userinfo "@" *
 *                              (RFC 9110 §4.2.4: treat it as an error)
 *                                                      any method but CONNECT
 *               authority-form host ":" 1*DIGIT, host non-empty  CONNECT only
 *               asterisk-form  "*"                       OPTIONS only
 *             Anything else is 400.
 *             HTTP-version: exactly "HTTP/1.0" or "HTTP/1.1"; another
 *             well-formed "HTTP/" DIGIT "." DIGIT is 505 (not treated as
 *             1.1 *); anything else 400. Longer than max_request_line: 414.
 *  Fields     field-name ":" OWS field-value OWS; the name a non-empty token
 *             directly followed by ":" (whitespace before the colon is 400,
 *             §5.1 MUST). A line starting with SP or HTAB (obs-fold, or
 *             whitespace before the first field) is 400 *. Values: VCHAR,
 *             obs-text, and SP/HTAB inside; the reported value excludes the
 *             OWS around it. More than max_fields fields: 431.
 *  Content-   1*DIGIT, no sign, space or list, at most 2^63-1 (else 400).
 *   Length    Any second Content-Length value, even an equal one and even in
 *             a comma list, is 400 * (RFC 9110 §8.6 allows merging equal
 *             values; proxies that merge and ones that do not disagree).
 *  Transfer-  A comma list of transfer-codings across all its lines,
 *   Encoding  case-insensitive. Each element a token with no parameters *;
 *             an empty element is 400 * (RFC 9110 §5.6.1 would have them
 *             ignored: "chunked, " is a known disagreement). The final
 *             coding must be chunked (else 400, §6.3); chunked twice is 400
 *             (§7: MUST NOT); chunked after another coding ("gzip, chunked")
 *             is 501, as no other coding is implemented. Together with
 *             Content-Length: 400 * (§6.3 allows removing Content-Length
 *             and going on). In an HTTP/1.0 request: 400 * (§6.1 allows
 *             treating it as faulty framing; HTTP/1.0 had no chunked).
 *  Host       An HTTP/1.1 request needs exactly one Host field; none, or two
 *             (even equal), is 400 (§3.2). HTTP/1.0 may omit it, but not
 *             repeat it. Its value may be empty; otherwise only unreserved,
 *             sub-delims, ":", "[", "]" and "%" (the characters of uri-host
 *             and port) are allowed (400).
 *  Connection A comma list of tokens (a non-token element is 400 *; empty
 *             elements are ignored). close, keep-alive and upgrade are
 *             matched case-insensitively. keep_alive is the decision:
 *             HTTP/1.1 unless close; HTTP/1.0 only with keep-alive and
 *             without close.
 *  Upgrade    upgrade is set for an HTTP/1.1 request whose Connection lists
 *             upgrade and that has an Upgrade field (RFC 9110 §7.8: an
 *             Upgrade in HTTP/1.0 MUST be ignored, and one not listed in
 *             Connection is meaningless). The Upgrade value is not parsed.
 *  Expect     expect_continue is set when the value is exactly 100-continue
 *             (case-insensitive) in an HTTP/1.1 request (RFC 9110 §10.1.1:
 *             an HTTP/1.0 100-continue MUST be ignored). Other values are
 *             left to the application (417).
 * Errors are reported in the order the bytes arrive: the first offending
 * byte, line or field decides the status.
 *
 * The chunked decoder (RFC 9112 §7.1) is a byte-level state machine whose
 * state is a small struct, so a body may arrive in pieces of any size. It
 * decodes in place: it writes the data of each chunk to out no further
 * than it has read from in, so out may equal in. Chunk data is moved with
 * one memmove per piece; only the chunk lines are walked byte by byte.
 *  chunk-size  1*HEXDIG (leading zeros allowed). A size that would take the
 *              body past max_body is 413 as soon as its digits show it (so
 *              "ffffffffffffffffff", which would overflow 64 bits, is 413).
 *  chunk-ext   *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
 *              exactly as in §7.1.1: validated and discarded. Whitespace
 *              is allowed only where BWS is, so "5 \r\n" is 400 *. The size
 *              line (digits and extensions) may be at most
 *              FA_HTTP_MAX_CHUNK_LINE bytes (400).
 *  line ends   CRLF only (bare CR or LF: 400), and exactly CRLF after each
 *              chunk's data (400).
 *  trailer     After the last chunk (size 0), fields as in a head (token
 *              name directly followed by ":", value bytes VCHAR, obs-text,
 *              SP, HTAB; no obs-fold), validated and discarded, then the
 *              final CRLF. At most FA_HTTP_MAX_TRAILER bytes (400).
 * When the final CRLF is read the decoder reports done, and consumed is
 * where the next pipelined request starts.
 *
 * fa_http_unquote() decodes %XX (either case) and leaves every other "%"
 * as it is, byte for byte like Python's urllib.parse.unquote_to_bytes; it
 * also works in place.
 */
#ifndef FA_HTTP_H
#define FA_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define FA_HTTP_DEFAULT_MAX_REQUEST_LINE 8192u
#define FA_HTTP_DEFAULT_MAX_FIELDS 100u
#define FA_HTTP_DEFAULT_MAX_HEAD 65536u

/* Longest chunk-size line (size digits and extensions, without CRLF), and
 * the longest trailer section (all its lines with their CRLFs, and the
 * final CRLF). Both carry nothing the server keeps, so they are small. */
#define FA_HTTP_MAX_CHUNK_LINE 4096u
#define FA_HTTP_MAX_TRAILER 16384u

typedef struct fa_http_limits {
    uint32_t max_request_line;  /* bytes of the request line without CRLF (else 414) */
    uint32_t max_fields;        /* field lines; fields[] must hold this many (else 431) */
    uint32_t max_head;          /* bytes of the whole head with its CRLFs (else 431) */
} fa_http_limits;

/* Offsets into the caller's buffer. The value excludes the OWS around it. */
typedef struct fa_http_field {
    uint32_t name_off, name_len, value_off, value_len;
} fa_http_field;

typedef struct fa_http_head {
    uint32_t head_len;          /* bytes of the head: any leading empty lines,
                                   request line, fields, final CRLFCRLF */
    uint32_t method_off, method_len;
    uint32_t target_off, target_len;
    uint32_t path_len;          /* target up to (not including) the first "?" */
    uint32_t nfields;
    int64_t content_length;     /* -1 when absent */
    uint8_t version_minor;      /* 0 or 1 */
    uint8_t chunked;            /* Transfer-Encoding: chunked */
    uint8_t keep_alive;         /* the connection may carry another request */
    uint8_t expect_continue;    /* Expect: 100-continue (HTTP/1.1) */
    uint8_t upgrade;            /* Connection: upgrade with an Upgrade field (HTTP/1.1) */
} fa_http_head;

/* Progress of phase 1 across calls. Zero it (fa_http_scan_init) before the
 * first call for each request. */
typedef struct fa_http_scan {
    uint32_t pos;       /* bytes examined; all before pos are valid */
    uint32_t line;      /* start of the line pos is in */
    uint32_t start;     /* start of the request line, after empty lines */
    uint32_t lines;     /* complete lines, the request line included */
} fa_http_scan;

static inline void fa_http_scan_init(fa_http_scan *s)
{
    s->pos = s->line = s->start = s->lines = 0;
}

/* Parses the request head at the start of buf[0, len).
 *
 * Call it again with the same scan after more bytes arrive, with buf
 * holding everything received so far (it may have moved, but the bytes
 * already passed must be unchanged). Returns:
 *   > 0  the head is complete: head_len bytes; *out and fields[0,
 *        out->nfields) are filled. Bytes after head_len are the body or the
 *        next request. fields must have room for lim->max_fields entries.
 *   0    more bytes are needed (*out and fields are not touched)
 *   < 0  -status to answer before closing: -400, -414, -431, -501, -505
 * Never reads buf beyond len, nor beyond lim->max_head. */
int fa_http_parse_head(const char *buf, size_t len, fa_http_scan *scan,
                       const fa_http_limits *lim, fa_http_head *out,
                       fa_http_field *fields);

/* State of one chunked body. Opaque apart from body (data bytes decoded). */
typedef struct fa_http_chunked {
    uint64_t max_body;  /* most data bytes in the whole body (else 413) */
    uint64_t body;      /* data bytes produced so far */
    uint64_t left;      /* data bytes of this chunk still to come; the size
                           being read while in the size line */
    uint32_t meta;      /* bytes of the current size line, or of the trailer */
    uint16_t state;
    uint8_t digits;     /* significant digits of the size being read */
    int status;         /* the error once one was found (sticky), else 0 */
} fa_http_chunked;

void fa_http_chunked_init(fa_http_chunked *c, uint64_t max_body);

/* Decodes in[0, len) into out (which may equal in: it never writes
 * out[k] before it has read in[k]). Sets *consumed (bytes of in used) and
 * *produced (data bytes written to out; always <= *consumed). Returns:
 *   1    done: the body ended at in + *consumed (the next request starts
 *        there); further calls consume nothing and return 1
 *   0    all of in was used and more is needed (*consumed == len)
 *   < 0  -400 (malformed) or -413 (a chunk would take the body past
 *        max_body); further calls return the same */
int fa_http_chunked_feed(fa_http_chunked *c, const char *in, size_t len, char *out,
                         size_t *consumed, size_t *produced);

/* Percent-decodes in[0, len) into out (which may equal in); returns the
 * bytes written, at most len. */
size_t fa_http_unquote(const char *in, size_t len, char *out);

#endif /* FA_HTTP_H */
