"""`python -m tests.campaign --seed S --minutes M [--vms]`: see tests/campaign/__init__.py."""

import sys

from tests.campaign.run import main

sys.exit(main())
