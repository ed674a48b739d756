"""``python -m clipfit.data COMMAND``: dataset tools (``prepare``: download and lay out datasets under
``--root``; ``doctor``: check them)."""
from __future__ import annotations

import sys
from typing import Callable, Dict, Optional, Sequence


def _doctor(argv: Sequence[str]) -> int:
    from clipfit.data.doctor import main
    from clipfit.training.cli import run_user_command

    return run_user_command(lambda: main(argv))


def _prepare(argv: Sequence[str]) -> int:
    from clipfit.data.prepare.cli import main

    return main(argv)


COMMANDS: Dict[str, Callable[[Sequence[str]], int]] = {"prepare": _prepare, "doctor": _doctor}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m clipfit.data {{{','.join(COMMANDS)}}} [options]  (--help after the command)",
              file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
