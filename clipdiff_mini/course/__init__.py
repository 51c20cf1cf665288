"""The course's tooling, apart from the machine-learning code: running the notebooks headlessly and
reporting what they did.

- ``runner``  -- every notebook through papermill in one profile, with progress lines, each kernel's
  peak memory and the run's summary (``python -m clipdiff_mini.course --profile laptop``)
- ``report``  -- the HTML report of a run (the notebooks rendered, their figures as PNG files)
- ``results`` -- the numbers a notebook reports (`ResultLog`), collected for the summary
- ``__main__`` -- ``python -m clipdiff_mini.course``: the runner's command line
"""
from clipdiff_mini.course.runner import (NotebookProgress, figures_folder, kernel_environment, list_notebooks, main,
                                         run_course, run_notebook, write_summary)

__all__ = ["NotebookProgress", "figures_folder", "kernel_environment", "list_notebooks", "main", "run_course",
           "run_notebook", "write_summary"]
