"""A process that uses the product the way users do, and the modules that loaded.

Imports fastaccept and its monitor, demo and tcpserver modules, parses the
serve verb's arguments, starts and stops a Server; prints, as one JSON line,
the sorted names of the fastaccept modules loaded.
"""
import json
import sys

import fastaccept
import fastaccept.demo  # noqa: F401
import fastaccept.monitor  # noqa: F401
import fastaccept.tcpserver  # noqa: F401
from fastaccept.__main__ import build_parser

build_parser(["serve"]).parse_args(["serve", "--port", "0"])
s = fastaccept.Server(lambda c, a: None)
s.start()
s.shutdown()
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fastaccept"))))
