"""Produced: the checkpoint denovo-mp20-mattergen-adapter-C-MLED (data/checkpoints/), a row of nbs/repro/pigen_tables.ipynb.

MatterGen | (M_LED, C) row of the PIGEN tables: experiments/conditional/run_c_mled.py (same 2,000-crystal subset, seed 0,
cached M_LED labels, 2,400 steps x 32, lr 1e-3, p_uncond 0.2) on the MatterGen-family base `denovo-mp20-mattergen` (2,843 steps).
Resumable: rerun the same command; training state lives in the runs dir.
Run: cd nbs && OMP_NUM_THREADS=1 nohup nice -n 19 ../.venv/bin/python ../experiments/repro_pigen/finetune_mattergen_c_mled.py [wall_budget_s] &"""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().parents[1] / "conditional" / "run_c_mled.py"
    sys.argv = [str(script), sys.argv[1] if len(sys.argv) > 1 else "720", "denovo-mp20-mattergen", "denovo-mp20-mattergen-adapter-C-MLED"]
    runpy.run_path(str(script), run_name="__main__")
