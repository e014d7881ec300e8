"""PROXY protocol headers built by hand from the byte layout of HAProxy's
proxy-protocol.txt (§2.1, §2.2), a bitwise CRC32c, and the proxy-protocol
package (PyPI) wrapped as an oracle that reads a header the way its stream
reader frames one."""
from __future__ import annotations

import ipaddress
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from proxyprotocol import ProxyProtocolIncompleteError
from proxyprotocol.result import (ProxyResultIPv4, ProxyResultIPv6, ProxyResultLocal,
                                  ProxyResultUnix, ProxyResultUnknown)
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
LOCAL, PROXY = 0x0, 0x1
# the family byte of each name the binding reports
FAMILY_BYTES = {"UNKNOWN": 0x00, "TCP4": 0x11, "UDP4": 0x12, "TCP6": 0x21, "UDP6": 0x22,
                "UNIX": 0x31, "UNIX_DGRAM": 0x32}
ADDR_SIZE = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_TYPE_NETNS = 0x30

Tlv = Tuple[int, bytes]


def crc32c(data: bytes) -> int:
    """CRC32c bit by bit (RFC 4960 Appendix B: reflected 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def v1(proto: str = "TCP4", src: str = "192.168.0.1", dst: str = "192.168.0.11",
       sport: Union[int, str] = 56324, dport: Union[int, str] = 443) -> bytes:
    """"PROXY" SP proto SP src SP dst SP sport SP dport CRLF, as given."""
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def tlv(type_: int, value: bytes) -> bytes:
    return struct.pack("!BH", type_, len(value)) + value


def ssl_tlv(client: int = 1, verify: int = 0, subs: Sequence[Tlv] = ()) -> bytes:
    return tlv(PP2_TYPE_SSL, struct.pack("!BI", client, verify)
               + b"".join(tlv(t, v) for t, v in subs))


def v2_addresses(fam: int, src: Any = None, dst: Any = None) -> bytes:
    """The address block of family byte fam: (host, port) pairs for IPv4
    and IPv6, 108-byte paths (bytes) for UNIX, nothing for UNSPEC."""
    family = fam >> 4
    if family in (1, 2):
        size = 4 if family == 1 else 16
        sa = ipaddress.ip_address(src[0]).packed
        da = ipaddress.ip_address(dst[0]).packed
        assert len(sa) == len(da) == size
        return sa + da + struct.pack("!HH", src[1], dst[1])
    if family == 3:
        return src.ljust(108, b"\0") + dst.ljust(108, b"\0")
    return b""


DEFAULT_ADDRESSES = {1: (("10.0.0.1", 1234), ("10.0.0.2", 443)),
                     2: (("2001:db8::1", 1234), ("2001:db8::2", 443)),
                     3: (b"/tmp/client.sock", b"/run/lb.sock")}


def v2(command: int = PROXY, fam: int = 0x11, addresses: Optional[bytes] = None,
       tlvs: bytes = b"", *, src: Any = None, dst: Any = None, version: int = 2,
       crc: bool = False, length: Optional[int] = None) -> bytes:
    """A v2 header: signature, version/command, family, length, addresses,
    TLVs. Without addresses they are built from src and dst (defaults per
    family); with crc, a PP2_TYPE_CRC32C TLV is appended and filled in;
    length overrides the length field."""
    if addresses is None:
        family = fam >> 4
        if family in DEFAULT_ADDRESSES:
            dsrc, ddst = DEFAULT_ADDRESSES[family]
            addresses = v2_addresses(fam, src if src is not None else dsrc,
                                     dst if dst is not None else ddst)
        else:
            addresses = b""
    body = addresses + tlvs
    if crc:
        body += tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")
    n = len(body) if length is None else length
    head = SIG + bytes([version << 4 | command, fam]) + struct.pack("!H", n)
    data = head + body
    if crc:
        data = data[:-4] + struct.pack("!I", crc32c(data))
    return data


def split_tlvs(area: bytes) -> List[Tlv]:
    """The TLVs of a well-formed area, in order."""
    out = []
    i = 0
    while i < len(area):
        n = struct.unpack_from("!H", area, i + 1)[0]
        out.append((area[i], area[i + 3:i + 3 + n]))
        i += 3 + n
    assert i == len(area)
    return out


# ---------------------------------------------------------------------------
# The oracle: proxy-protocol's v1 and v2 parsers, framed as its reader does
# (v1: up to the first LF; v2: the 16 bytes, then their length).

class Incomplete(Exception):
    pass


def oracle_frame(data: bytes) -> Optional[bytes]:
    """The header as the oracle's reader would hand it to its parser, or
    None when it would still be reading."""
    if data[:8] == SIG[:8]:
        if len(data) < 16:
            return None
        n = 16 + struct.unpack_from("!H", data, 14)[0]
        return data[:n] if len(data) >= n else None
    if data[:6] == b"PROXY ":
        end = data.find(b"\n")
        return data[:end + 1] if end >= 0 else None
    if len(data) < 8:
        return None
    return data[:8]


def oracle(data: bytes) -> Tuple[str, Any]:
    """("ok", (header_len, shape)), ("incomplete", None) or ("error", exc).
    shape is the result in the binding's terms: command, family, src, dst
    (as ip_address and port, or unix path str) and tlvs as a dict."""
    frame = oracle_frame(data)
    if frame is None:
        return ("incomplete", None)
    try:
        if frame[:8] == SIG[:8]:
            result = ProxyProtocolV2().unpack(frame)
        elif frame[:6] == b"PROXY ":
            result = ProxyProtocolV1().unpack(frame)
        else:
            raise ValueError("neither signature")
    except ProxyProtocolIncompleteError:
        return ("incomplete", None)
    except Exception as exc:          # noqa: BLE001 - any exception is a rejection
        return ("error", exc)
    return ("ok", (len(frame), oracle_shape(result)))


def oracle_shape(result: Any) -> Dict[str, Any]:
    tlvs = dict(result.tlv) if not isinstance(result, ProxyResultUnknown) else None
    if isinstance(result, ProxyResultLocal):
        return {"command": "LOCAL", "tlvs": tlvs}
    if isinstance(result, ProxyResultUnknown):
        return {"command": "UNKNOWN"}
    kind = {1: "STREAM", 2: "DGRAM", None: "UNSPEC"}[
        None if result.protocol is None else int(result.protocol)]
    if isinstance(result, ProxyResultUnix):
        return {"command": "PROXY", "family": "UNIX", "transport": kind,
                "src": result.source, "dst": result.dest, "tlvs": tlvs}
    assert isinstance(result, (ProxyResultIPv4, ProxyResultIPv6))
    return {"command": "PROXY", "family": "INET" if isinstance(result, ProxyResultIPv4)
            else "INET6", "transport": kind,
            "src": (ipaddress.ip_address(str(result.source[0]).split("%")[0]),
                    result.source[1]),
            "dst": (ipaddress.ip_address(str(result.dest[0]).split("%")[0]), result.dest[1]),
            "tlvs": tlvs}
