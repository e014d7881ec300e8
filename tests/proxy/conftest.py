"""tests/proxy: the PROXY protocol parser's tests share fa_proxy_build (the
headers built by hand from the spec's byte layout, and the proxy-protocol
package wrapped as an oracle), next to this file."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
