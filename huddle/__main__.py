"""``python -m huddle`` and the ``huddle`` console script; the CLI module is imported only when run."""

from __future__ import annotations


def main() -> None:
    from huddle.cli import run

    run()


if __name__ == "__main__":
    main()
