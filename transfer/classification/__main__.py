import sys

from mocobench.transfer.classification.cli import main

sys.exit(main())
