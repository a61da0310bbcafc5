import sys

from mocobench.transfer.segmentation.cli import main

sys.exit(main())
