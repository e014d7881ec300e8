"""An idle process: prints "ready", then waits for EOF on stdin and exits 0."""
import sys

print("ready", flush=True)
sys.stdin.read()
