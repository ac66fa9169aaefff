"""What a Jupyter server run from this checkout's .venv does when it saves a notebook (`make lab`, the browser test).

`make setup` links this file into .venv/etc/jupyter/, so it applies to servers started from .venv and nowhere else.
"""
import os
import subprocess


def xtalnb_pre_save(model, path, contents_manager, **kwargs):
    """Before a notebook is written: nbdev's clean (settings.ini `jupyter_hooks = True`: no execution metadata, cell ids kept).
    The lessons that git keeps as source only (`filter=xtalnb-nbstrip` in .gitattributes) are also saved without outputs,
    execution counts and widget state, so opening, running and saving them leaves `git status` clean; run them to see outputs."""
    if model.get("type") != "notebook" or model.get("content", {}).get("nbformat") != 4:
        return
    os_path = os.path.join(contents_manager.root_dir, path)
    try:
        from nbdev.clean import clean_jupyter
    except ModuleNotFoundError:
        clean_jupyter = None
    if clean_jupyter is not None:
        clean_jupyter(path=os_path, model=model)
    attr = subprocess.run(["git", "check-attr", "filter", "--", os.path.basename(os_path)],
                          cwd=os.path.dirname(os_path) or ".", capture_output=True, text=True)
    if attr.returncode == 0 and attr.stdout.strip().endswith(": xtalnb-nbstrip"):
        nb = model["content"]
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb.get("metadata", {}).pop("widgets", None)


c.ContentsManager.pre_save_hook = xtalnb_pre_save  # noqa: F821  (`c` is the config object Jupyter passes in)
