"""Run CPython's own test_socketserver with fastaccept.TCPServer in socketserver's place.

A child program (tests/test_tcpserver_cpython.py runs it): socketserver's
TCPServer and ThreadingTCPServer are replaced by fastaccept.TCPServer before
CPython's test module is imported, so every class that module builds on them
(its servers, BaseErrorTestServer, the ThreadingMixIn combinations) is built
on fastaccept's. The TCP tests named on the command line are run; a JSON
summary goes to stdout as the last line. Exit 0 only if every one passed.
"""
import io
import json
import socketserver
import sys
import unittest

import fastaccept


def main(names):
    socketserver.TCPServer = fastaccept.TCPServer
    socketserver.ThreadingTCPServer = fastaccept.TCPServer
    try:
        from test import test_socketserver
    except ImportError as e:
        print(json.dumps({"skip": f"CPython's test package is not installed: {e}"}))
        return 0
    assert issubclass(test_socketserver.BaseErrorTestServer, fastaccept.TCPServer)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromName(n, test_socketserver) for n in names)
    out = io.StringIO()
    result = unittest.TextTestRunner(stream=out, verbosity=2).run(suite)
    sys.stderr.write(out.getvalue())
    failed = [t.id() for t, _ in result.failures + result.errors]
    skipped = [t.id() for t, _ in result.skipped]
    print(json.dumps({"run": result.testsRun, "failed": failed, "skipped": skipped}))
    return 0 if result.wasSuccessful() and not skipped else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
