"""Open N connections to HOST PORT and send ROUNDS one-line requests on each.

A child program (tests/test_conns.py runs it, so that its descriptors count
against a limit of its own). Every connection sends "<round>.<index>\\n" and
must get the same line back; all N are in flight at once (one selector). After
each round but the last it prints "round R done" and waits for a line on
stdin before the next, so the test can look at the server in between. Prints
a JSON summary last: {"answered": A, "errors": [...]}.
"""
import json
import resource
import selectors
import socket
import sys
import time


def main(host: str, port: int, n: int, rounds: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    socks = [socket.create_connection((host, port), timeout=60.0) for _ in range(n)]
    sel = selectors.DefaultSelector()
    answered, errors = 0, []
    try:
        for r in range(rounds):
            want = {}
            for i, s in enumerate(socks):
                line = b"%d.%d\n" % (r, i)
                s.sendall(line)
                want[s.fileno()] = (s, line, bytearray())
            for s in socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            deadline = time.monotonic() + 120.0
            while want and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1.0):
                    s = key.fileobj
                    sock, line, got = want[s.fileno()]
                    chunk = s.recv(4096)
                    if not chunk:
                        errors.append(f"closed by the server in round {r}")
                    got += chunk
                    if not chunk or got.endswith(b"\n"):
                        if chunk and bytes(got) != line:
                            errors.append(f"{bytes(got)!r} for {line!r}")
                        answered += bool(chunk)
                        sel.unregister(s)
                        del want[s.fileno()]
            if want:
                errors.append(f"{len(want)} replies missing in round {r}")
            for s in socks:
                s.setblocking(True)
            if r + 1 < rounds:
                print(f"round {r} done", flush=True)
                sys.stdin.readline()
    finally:
        sel.close()
        for s in socks:
            s.close()
    print(json.dumps({"answered": answered, "errors": errors[:10]}), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
