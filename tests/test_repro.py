"""Every reproduction notebook in nbs/repro/ runs at smoke scale through the runner (`xtalnb.repro.run_repro`) and ends with
a side-by-side table whose paper column is filled. Each run happens in a scratch root (a copy of the notebook, settings.ini and
links to data/ and results/) so the tests never write stamps or results into the repository."""
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from xtalnb.repro import run_repro
from xtalnb.utils import source_root

ROOT = source_root()
NAMES = sorted(p.stem for p in (ROOT / "nbs" / "repro").glob("*.ipynb"))


def result_table(nb_path) -> pd.DataFrame:
    """The notebook's result table: the JSON printed after 'RESULT_TABLE ' if there is one, else the last HTML table output."""
    nb = json.loads(Path(nb_path).read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    for o in reversed(outputs):
        text = "".join(o.get("text", "")) if o.get("output_type") == "stream" else ""
        for line in text.splitlines():
            if line.startswith("RESULT_TABLE "):
                return pd.DataFrame(json.loads(line[len("RESULT_TABLE "):]))
    for o in reversed(outputs):
        html = o.get("data", {}).get("text/html")
        if html:
            return pd.read_html(io.StringIO("".join(html)))[0]
    raise AssertionError(f"{nb_path} shows no result table")


def test_result_table_parser(tmp_path):
    "The parser finds the printed table, and falls back to the last HTML table."
    cell = lambda outs: {"cell_type": "code", "source": "", "metadata": {}, "outputs": outs}
    df = pd.DataFrame({"quantity": ["x"], "paper": ["1.0"], "ours": [2.0]})
    nb = {"cells": [cell([{"output_type": "stream", "name": "stdout", "text": "hi\nRESULT_TABLE " + df.to_json(orient="records")}])]}
    (tmp_path / "a.ipynb").write_text(json.dumps(nb))
    assert result_table(tmp_path / "a.ipynb").to_dict("records") == df.to_dict("records")
    nb = {"cells": [cell([{"output_type": "execute_result", "data": {"text/html": df.to_html()}, "metadata": {}}])]}
    (tmp_path / "b.ipynb").write_text(json.dumps(nb))
    assert result_table(tmp_path / "b.ipynb")["paper"].tolist() == [1.0]
    (tmp_path / "c.ipynb").write_text(json.dumps({"cells": [cell([])]}))
    with pytest.raises(AssertionError, match="no result table"):
        result_table(tmp_path / "c.ipynb")


@pytest.mark.parametrize("name", NAMES)
def test_repro_notebook_smoke(name, tmp_path):
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    (tmp_path / "nbs" / "repro").mkdir(parents=True)
    shutil.copy(ROOT / "nbs" / "repro" / f"{name}.ipynb", tmp_path / "nbs" / "repro" / f"{name}.ipynb")
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)   # shipped checkpoints, label stores, references
    (tmp_path / "results").symlink_to(ROOT / "results", target_is_directory=True)   # cached evaluations (read only)
    (rec,) = run_repro([name], scale="smoke", root=tmp_path)
    assert rec["status"] == "ran", rec
    runs = tmp_path / "nbs" / "repro" / "_runs"
    stamp = json.loads((runs / f"{name}.smoke.json").read_text())
    assert stamp["scale"] == "smoke" and stamp["parameters"] == {} and len(stamp["input_hash"]) == 64
    table = result_table(runs / f"{name}.smoke.ipynb")
    paper_cols = [c for c in table.columns if "paper" in str(c).lower() and "row" not in str(c).lower()]
    assert paper_cols, f"{name}: result table has no paper column: {list(table.columns)}"
    for c in paper_cols:
        vals = table[c]
        assert vals.notna().all() and vals.astype(str).str.strip().ne("").all(), f"{name}: empty paper values in {c!r}"
    assert run_repro([name], scale="smoke", root=tmp_path)[0]["status"] == "skipped"   # inputs unchanged


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_is_visible_to_papermill(name):
    "papermill only injects (and `papermill -p` only accepts quietly) the names it can parse in the parameters cell."
    import re
    import papermill as pm
    nb = json.loads((ROOT / "nbs" / "repro" / f"{name}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'parameters'"
    assigned = set(re.findall(r"^(\w+)\s*=", "".join(cells[0]["source"]), re.M)) - {"_g"}
    assert assigned and assigned <= set(pm.inspect_notebook(str(ROOT / "nbs" / "repro" / f"{name}.ipynb")))
