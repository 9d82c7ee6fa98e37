"""docs/results/matrix is rendered from its committed CSVs: rendering it again must give the
committed README.md word for word (every number in it comes from the data), and a heatmap."""

import importlib.util
import re
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "docs" / "results" / "matrix"


def load_render():
    spec = importlib.util.spec_from_file_location("matrix_render", FOLDER / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_published_matrix_readme_is_rendered_from_its_csvs(tmp_path):
    readme, png = load_render().render(tmp_path, FOLDER)
    committed = (FOLDER / "README.md").read_text()
    assert readme.read_text() == committed, (
        "docs/results/matrix/README.md differs from what render.py makes of the committed "
        "CSVs; run `PYTHONPATH=src python docs/results/matrix/render.py` and commit the result"
    )
    assert png.stat().st_size > 10_000
    assert re.search(r"n = [0-9-]+ seeds per cell", committed)  # the caption states n
