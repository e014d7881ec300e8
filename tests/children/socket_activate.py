"""Start a program the way systemd's socket activation does.

    python socket_activate.py [--fdnames NAME] -- PROGRAM ARGS...

Binds a listening socket on 127.0.0.1 (port 0), puts it at descriptor 3,
sets LISTEN_FDS=1 and LISTEN_PID to this process's pid (which exec() keeps),
prints {"port": N} on stdout, and execs PROGRAM with ARGS.
"""
import json
import os
import socket
import sys

args = sys.argv[1:]
names = None
if args[:1] == ["--fdnames"]:
    names, args = args[1], args[2:]
assert args[:1] == ["--"], "usage: socket_activate.py [--fdnames NAME] -- PROGRAM ARGS..."
argv = args[1:]
sock = socket.create_server(("127.0.0.1", 0), backlog=128)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
    sock.close()
os.set_inheritable(3, True)
port = socket.socket(fileno=os.dup(3)).getsockname()[1]
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
if names is not None:
    os.environ["LISTEN_FDNAMES"] = names
print(json.dumps({"port": port}), flush=True)
os.execvp(argv[0], argv)
