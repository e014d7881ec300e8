"""Command line: ``fastaccept VERB`` (also ``python -m fastaccept VERB``).

    serve   a demo server answering every connection with a fixed HTTP 200 (fastaccept.demo)
    wsgi    serve a WSGI application over HTTP/1.1 (fastaccept.http.command)
    bench   benchmark fastaccept against reference servers (fastaccept.bench)
    load    open many connections to a server from C (fastaccept.bench.loadgen)
    monitor watch any listening TCP port's kernel accept queue (fastaccept.monitor)

Each verb's options live in its own module (``add_arguments`` and ``run`` or
``main``); this module only dispatches. A verb's module is imported when the
verb runs, so ``fastaccept serve`` never imports the bench's instruments.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

#: verb -> (module, its help, its description or None, the function that runs it)
VERBS = {
    "serve": ("fastaccept.demo", "run a demo server that answers HTTP 200 \"ok\"", None, "run"),
    "wsgi": ("fastaccept.http.command", "serve a WSGI application (MODULE:APP) over HTTP/1.1",
             None, "run"),
    "bench": ("fastaccept.bench.runner", "benchmark fastaccept against reference servers",
              "Run the load scenarios against every reference server, interleaved, and print "
              "a table of medians.", "main"),
    "load": ("fastaccept.bench.loadgen", "open many connections to a server from C and report "
             "conn/s and latency percentiles", None, "main"),
    "monitor": ("fastaccept.monitor", "watch a listening TCP port's kernel accept queue", None,
                "run"),
}

PROG = "fastaccept"


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """Return the argument parser; only the module of the verb in ``argv`` is imported
    (every verb's, for ``--help`` or no verb)."""
    parser = argparse.ArgumentParser(prog=PROG, description="fastaccept command line tools")
    verbs = parser.add_subparsers(dest="verb", required=True)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for verb, (module_name, help_, description, _) in VERBS.items():
        if wanted in VERBS and verb != wanted:
            verbs.add_parser(verb, help=help_)
            continue
        module = importlib.import_module(module_name)
        description = description or getattr(module, "VERB_DESCRIPTION", None)
        sub = verbs.add_parser(verb, help=help_, description=description)
        module.add_arguments(sub)
        sub.set_defaults(module=module_name)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
    # the pid: with --processes, several processes write to the same stream
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    run = getattr(importlib.import_module(args.module), VERBS[args.verb][3])
    try:
        return int(run(args))
    except (ValueError, TypeError, OSError) as e:
        print(f"{PROG} {args.verb}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
