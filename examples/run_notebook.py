"""Execute examples/landscape.ipynb top to bottom against a run directory (used by the tests).

    python examples/run_notebook.py RUN_DIR [OUT.ipynb [SHARPNESS_RUN_DIR]]
"""
import os
import sys

import nbformat
from nbclient import NotebookClient

here = os.path.dirname(os.path.abspath(__file__))
os.environ["LOSSCAPE_RUN"] = os.path.abspath(sys.argv[1])
if len(sys.argv) > 3:
    os.environ["LOSSCAPE_SHARPNESS"] = os.path.abspath(sys.argv[3])
nb = nbformat.read(os.path.join(here, "landscape.ipynb"), as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": here}}).execute()
if len(sys.argv) > 2:
    nbformat.write(nb, sys.argv[2])
print(f"executed {len(nb.cells)} cells against {sys.argv[1]}")
