"""``python -m ratelimit_client``: the same as the ``ratelimit-client`` command."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
