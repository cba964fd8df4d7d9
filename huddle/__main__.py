"""``python -m huddle`` and the ``huddle`` console script; the CLI module is imported only when run."""

from __future__ import annotations

import sys


def main() -> None:
    from huddle.cli import run
    from huddle.engines import exit_without_teardown, temporal_loaded

    try:
        run()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if temporal_loaded():  # its threads can abort the interpreter's teardown (`exit_without_teardown`)
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        exit_without_teardown(code or 0)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
