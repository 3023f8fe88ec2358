import sys

from coordd.main import main

sys.exit(main())
