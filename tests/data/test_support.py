"""What the Python tests of tests/data share: a check that fails the test with its detail, the
--tandem/--work arguments every script takes, and the `regex` module (or a skip, exit 77)."""
import argparse
import sys


def check(cond, what, detail=""):
    if not cond:
        print(detail)
        sys.exit("FAILED: " + what)
    print("ok:", what)


def work_args(extra=None):
    """Parses --tandem BINARY --work DIR (and what `extra(parser)` adds)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--work", required=True)
    if extra is not None:
        extra(ap)
    return ap.parse_args()


def require_regex():
    """The third-party `regex` module (Unicode classes for GPT-2's split), else SKIPPED (77)."""
    try:
        import regex
    except ImportError:
        print("SKIPPED: the Python `regex` module is not installed (Debian: python3-regex)")
        sys.exit(77)
    return regex
