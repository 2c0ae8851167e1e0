"""mirrord's entry point: `python -m mirrord` and the `mirrord` command."""

import sys

from mirrord import lean


def main() -> int:
    """Run the command line without OpenSSL loaded (`mirrord.lean`)."""
    lean.without_openssl()
    from mirrord.cli import main as cli_main  # noqa: PLC0415  after the line above, on purpose

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
