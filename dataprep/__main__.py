"""`python -m dataprep`: the same command line as `dataprep`.

    python -m dataprep run configs/quickstart.yaml
"""

import sys

from dataprep.cli import main

sys.exit(main())
