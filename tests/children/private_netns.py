"""bench.enter_private_netns() in a process of its own (it must not move the test's).

Prints "private" when the process moved into a new network namespace, else
why not; then shows loopback works there (a listener and one connection).
"""
import socket

from fastaccept import bench

why = bench.enter_private_netns()
print(why or "private")
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
c = socket.create_connection(s.getsockname(), timeout=5)
c.close()
