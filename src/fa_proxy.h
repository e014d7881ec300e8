/*
 * fa_proxy.h - strict parser of the PROXY protocol header (versions 1 and 2,
 * HAProxy's proxy-protocol.txt), for the accept loop.
 *
 * Behind a load balancer (HAProxy, nginx, ...) configured to send it, each
 * connection starts with a PROXY header that carries the addresses of the
 * client's own connection; the bytes after it are the client's. The accept
 * loop reads and checks that header in C, without the GIL, and reports the
 * source address it carries as the peer. So this code allocates nothing,
 * has no mutable state outside the caller's arguments (its tables are
 * const), no locale, never calls back, and touches only the caller's
 * buffers: any number of threads may use it at once. It never reads buf
 * beyond len.
 *
 * Incremental, without state: the caller calls fa_proxy_parse() with
 * everything received so far; 0 means "not decided yet, call again with
 * more". Bytes are checked in the order they arrive and the first offending
 * byte decides the error, so a partial header that can no longer become
 * valid is rejected at once (for most other protocols at the first byte:
 * "G" of GET, 0x16 of a TLS record), and the result for a prefix is either
 * 0 or the result for the whole input. A call costs O(bytes examined): at
 * most 107 for version 1, 16 for an incomplete version 2 header, the header
 * length once a version 2 header is complete. A header that arrives a byte
 * at a time costs O(107^2) in all for version 1 and O(n) for version 2.
 * The result is never 0 once len reaches max_len (after clamping; at least
 * FA_PROXY_MIN_MAX_LEN, so above the 107 bytes of any version 1 line): a
 * buffer of max_len bytes always suffices to decide.
 *
 * Detection. Byte 0 decides: "P" is version 1, CR (0x0D) is version 2, any
 * other byte is FA_PROXY_ENOTPROXY. Version 1 must start "PROXY" and
 * version 2 with the 12-byte signature 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A;
 * a byte that differs from them is FA_PROXY_ENOTPROXY. The spec (§2.2) has
 * the receiver wait for 8 or 16 bytes before it decides; deciding at the
 * first differing byte gives the same answer sooner. Nothing here guesses
 * whether a header is present: the caller must expect one on every
 * connection of a listener configured for it (spec §5), and drop the
 * connection on any error.
 *
 * What is accepted, and the strictness choices. Where the spec leaves the
 * receiver a choice, or says nothing, this parser takes the strict reading;
 * each such choice is marked *.
 *
 * Version 1 (§2.1): one line of US-ASCII,
 *   "PROXY" SP proto SP src SP dst SP sport SP dport CRLF
 *   "PROXY" SP "UNKNOWN" [ SP *( %x20-7E ) ] CRLF
 *  Spaces     exactly one SP between fields; no HTAB, no runs, nothing
 *             before "PROXY" and nothing before the CRLF.
 *  proto      exactly "TCP4", "TCP6" or "UNKNOWN", case-sensitive. Any other
 *             non-empty word of VCHARs (UDP4, TCP5, tcp4...) is
 *             FA_PROXY_EFAMILY, as soon as its bytes stop being a prefix of
 *             one of the three; an empty one, or a CTL or non-ASCII byte in
 *             it, is FA_PROXY_EMALFORMED.
 *  UNKNOWN    the spec has the receiver ignore what follows up to the CRLF:
 *             it is skipped, but must start with SP * ("UNKNOWNX" is
 *             EFAMILY) and hold only printable US-ASCII %x20-7E * (a CTL, a
 *             bare CR or LF, or a byte >= 0x80 is EMALFORMED). Reported as
 *             command LOCAL with family UNSPEC: use the real connection's
 *             addresses (§2.1).
 *  TCP4 src,  dotted quads: exactly four decimal numbers 0-255 separated by
 *   dst       single dots, no leading zero ("0" itself is fine, "01" is
 *             not), no sign, no other form (no "1.2.3", no hex or octal).
 *  TCP6 src,  RFC 4291 §2.2 text: one to eight groups of one to four hex
 *   dst       digits (either case; leading zeros in a group are fine)
 *             separated by ":", at most one "::" standing for one or more
 *             zero groups, exactly 128 bits in all; the last 32 bits may be
 *             a dotted quad as above ("::ffff:127.0.0.1", which is what a
 *             balancer listening on a dual-stack socket sends for an IPv4
 *             client). No zone index ("%eth0") *, no brackets. Both
 *             addresses must be of the family proto names.
 *  sport,     decimal 0-65535, one to five digits, no leading zero ("0"
 *   dport     itself is fine), no sign or space.
 *  Length     at most 107 bytes with the CRLF (FA_PROXY_V1_MAX, the
 *             spec's worst case). A line with no CRLF in its first 107
 *             bytes (possible only after UNKNOWN, or with two IPv6
 *             addresses in their longest dotted-quad form) is
 *             FA_PROXY_ETOOLONG.
 *  Line end   CRLF only: a bare CR or LF anywhere is EMALFORMED.
 *
 * Version 2 (§2.2): the 16-byte fixed part, then an address block, then
 * TLVs, 16 + len bytes in all.
 *  Version    the high nibble of byte 12 must be 2, else FA_PROXY_EVERSION.
 *  Command    the low nibble: 0 LOCAL, 1 PROXY; anything else is
 *             FA_PROXY_ECOMMAND.
 *  Family     byte 13 must be one of the seven combinations the spec lists:
 *   byte      0x00 UNSPEC, 0x11 TCP over IPv4, 0x12 UDP over IPv4, 0x21 TCP
 *             over IPv6, 0x22 UDP over IPv6, 0x31 UNIX stream, 0x32 UNIX
 *             datagram. Any other byte is FA_PROXY_EFAMILY: unassigned
 *             nibbles (the spec's MUST), and also the combinations of
 *             assigned nibbles it does not list (0x01, 0x10, 0x13...) *,
 *             which have no defined address layout. This holds for LOCAL
 *             too *, although the spec says a LOCAL family is ignored: a
 *             sender that puts an unassigned value there is broken.
 *  len        bytes 14-15, big-endian. The address block is 0 bytes for
 *             UNSPEC, 12 for IPv4 (two addresses, two ports), 36 for IPv6,
 *             216 for UNIX (two 108-byte paths); len smaller than that is
 *             EMALFORMED, for LOCAL too * (the spec has LOCAL senders send
 *             len 0, with family UNSPEC). 16 + len above max_len is
 *             FA_PROXY_ETOOLONG, decided as soon as the 16 bytes are there,
 *             before waiting for the rest. max_len defaults to 4096 *
 *             (FA_PROXY_DEFAULT_MAX_LEN; the spec allows 65551, but a
 *             header beyond a few hundred bytes is not one a balancer sends)
 *             and is clamped into [FA_PROXY_MIN_MAX_LEN, FA_PROXY_MAX_MAX_LEN].
 *  Addresses  taken as they are: an IPv4 or IPv6 address and port of any
 *             value (0.0.0.0, port 0...); a UNIX path of any bytes. A UNIX
 *             path that starts with a NUL is an abstract name: its
 *             trailing NULs are dropped (the 108 bytes carry no length); an
 *             all-zero path is an unnamed socket (the usual client side).
 *  TLVs       the bytes after the address block, up to 16 + len, must be a
 *             whole number of TLVs: type (1 byte), length (2, big-endian),
 *             value; a TLV that does not fit, or 1 or 2 bytes left over, is
 *             EMALFORMED * (the spec lets a receiver skip them unread; a
 *             receiver that reads them must not read something else than
 *             another one does). Types are not interpreted, except:
 *               PP2_TYPE_AUTHORITY (0x02)  reported (offset, length); its
 *                                          bytes are not checked (UTF-8 per
 *                                          spec) *
 *               PP2_TYPE_CRC32C (0x03)     value exactly 4 bytes, else
 *                                          EMALFORMED; checked: the CRC32c
 *                                          (RFC 4960 App. B) of the whole
 *                                          header with those 4 bytes taken
 *                                          as zero must equal the value
 *                                          (big-endian), else
 *                                          FA_PROXY_ECHECKSUM
 *               PP2_TYPE_SSL (0x20)        value at least 5 bytes (client
 *                                          flags, 32-bit verify) followed
 *                                          by whole sub-TLVs, else
 *                                          EMALFORMED *; client and verify
 *                                          are reported
 *             Each of these three at most once: a second one is EMALFORMED *
 *             (two readers that take the first and the last would disagree).
 *             Any other type may repeat. For LOCAL the TLVs are checked the
 *             same way.
 *  LOCAL      reported with the family as sent, and no addresses: the
 *             connection's own endpoints stand (§2.2).
 *  UNSPEC     with PROXY: accepted, no addresses (the spec lets the
 *             receiver accept or reject; it says to ignore the addresses).
 *  UDP, UNIX  the addresses are reported with transport DGRAM or family
 *   DGRAM     UNIX as sent; what to do with a datagram family on a stream
 *             connection is the caller's choice.
 */
#ifndef FA_PROXY_H
#define FA_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define FA_PROXY_V1_MAX 107u            /* longest version 1 line, CRLF included */
#define FA_PROXY_V1_MIN 15u             /* "PROXY UNKNOWN\r\n" */
#define FA_PROXY_V2_FIXED 16u           /* signature, version/command, family, len */
#define FA_PROXY_DEFAULT_MAX_LEN 4096u  /* default bound of a whole version 2 header */
#define FA_PROXY_MIN_MAX_LEN 232u       /* 16 + 216: a UNIX header fits under any bound */
#define FA_PROXY_MAX_MAX_LEN 65551u     /* 16 + 65535: the format's own bound */

/* Results below zero. */
enum {
    FA_PROXY_ENOTPROXY = -1,    /* neither "PROXY" nor the version 2 signature */
    FA_PROXY_EMALFORMED = -2,   /* a PROXY header that breaks the format */
    FA_PROXY_EVERSION = -3,     /* version 2 signature, version nibble not 2 */
    FA_PROXY_ECOMMAND = -4,     /* version 2 command neither LOCAL nor PROXY */
    FA_PROXY_EFAMILY = -5,      /* unsupported protocol (v1) or family byte (v2) */
    FA_PROXY_ETOOLONG = -6,     /* v1 beyond 107 bytes; v2 beyond max_len */
    FA_PROXY_ECHECKSUM = -7,    /* v2 PP2_TYPE_CRC32C does not match */
};

/* command */
enum { FA_PROXY_LOCAL = 0, FA_PROXY_PROXY = 1 };
/* family: the high nibble of the version 2 family byte */
enum { FA_PROXY_AF_UNSPEC = 0, FA_PROXY_AF_INET = 1, FA_PROXY_AF_INET6 = 2,
       FA_PROXY_AF_UNIX = 3 };
/* transport: its low nibble */
enum { FA_PROXY_UNSPEC = 0, FA_PROXY_STREAM = 1, FA_PROXY_DGRAM = 2 };

/* TLV types of version 2 (spec §2.2). */
enum {
    FA_PP2_TYPE_ALPN = 0x01,
    FA_PP2_TYPE_AUTHORITY = 0x02,
    FA_PP2_TYPE_CRC32C = 0x03,
    FA_PP2_TYPE_NOOP = 0x04,
    FA_PP2_TYPE_UNIQUE_ID = 0x05,
    FA_PP2_TYPE_SSL = 0x20,
    FA_PP2_TYPE_NETNS = 0x30,
};
/* bits of ssl_client */
enum { FA_PP2_CLIENT_SSL = 0x01, FA_PP2_CLIENT_CERT_CONN = 0x02,
       FA_PP2_CLIENT_CERT_SESS = 0x04 };

typedef struct fa_proxy_result {
    uint32_t header_len;        /* bytes of the header; the payload follows */
    uint8_t version;            /* 1 or 2 */
    uint8_t command;            /* FA_PROXY_LOCAL (v1 UNKNOWN too) or FA_PROXY_PROXY */
    uint8_t family;             /* FA_PROXY_AF_*; v1: INET, INET6 or UNSPEC */
    uint8_t transport;          /* FA_PROXY_STREAM, _DGRAM, _UNSPEC; v1: STREAM
                                   for TCP4/TCP6, UNSPEC for UNKNOWN */
    /* The client's (src) and the balancer's listening (dst) addresses, as
     * accept4() and getsockname() would give them (AF_INET, AF_INET6 or
     * AF_UNIX, ports in network order). src_len and dst_len are 0 when the
     * connection's own addresses stand: LOCAL, v1 UNKNOWN, family UNSPEC. */
    socklen_t src_len, dst_len;
    struct sockaddr_storage src, dst;
    /* Version 2: the TLV area, buf[tlv_off, tlv_off + tlv_len); 0, 0 for v1. */
    uint32_t tlv_off, tlv_len;
    /* PP2_TYPE_AUTHORITY's value, buf[authority_off, + authority_len). */
    uint32_t authority_off, authority_len;
    uint8_t has_authority;
    uint8_t has_ssl;            /* a PP2_TYPE_SSL TLV: ssl_client, ssl_verify */
    uint8_t has_crc32c;         /* a PP2_TYPE_CRC32C TLV, and it matched */
    uint8_t ssl_client;         /* FA_PP2_CLIENT_* bits */
    uint32_t ssl_verify;        /* 0: the client's certificate was verified */
} fa_proxy_result;

/* Parses the PROXY header at the start of buf[0, len), version 1 or 2,
 * with version 2 headers bounded by max_len bytes (clamped into
 * [FA_PROXY_MIN_MAX_LEN, FA_PROXY_MAX_MAX_LEN]). Returns:
 *   > 0  the header is complete and valid: its length; *out is filled, and
 *        the payload starts at buf + that length (it may already be in buf)
 *   0    not decided: every byte so far fits a header; call again with
 *        more (with buf holding everything received so far)
 *   < 0  FA_PROXY_E*: drop the connection
 * *out is written only when the result is > 0. */
int fa_proxy_parse_max(const char *buf, size_t len, size_t max_len, fa_proxy_result *out);

/* fa_proxy_parse_max() with max_len FA_PROXY_DEFAULT_MAX_LEN. */
int fa_proxy_parse(const char *buf, size_t len, fa_proxy_result *out);

/* CRC32c (Castagnoli, reflected, RFC 4960 Appendix B) of buf[0, len),
 * continuing from crc (0 to start): the checksum PP2_TYPE_CRC32C carries. */
uint32_t fa_proxy_crc32c(uint32_t crc, const void *buf, size_t len);

/* A short English name of a result below zero ("malformed", ...), or NULL. */
const char *fa_proxy_strerror(int rc);

#endif /* FA_PROXY_H */
