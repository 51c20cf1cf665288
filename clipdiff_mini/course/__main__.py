"""``python -m clipdiff_mini.course``: the notebook runner's command line (`runner.main`)."""
import sys

from clipdiff_mini.course.runner import main

sys.exit(main())
