"""tests/http: the HTTP parser's tests share fa_http_oracles (httptools and
h11 wrapped as oracles), next to this file."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
