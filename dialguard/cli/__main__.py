"""`python -m dialguard.cli ...`"""

import sys

from dialguard.cli.main import main

sys.exit(main())
