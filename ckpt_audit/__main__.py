"""`python -m ckpt_audit` is the same as the `ckpt-audit` console script."""

from ckpt_audit.cli import entry

if __name__ == "__main__":
    entry()
