"CLI-level behaviour of `xtalnb discover` (the `make run` job): bad input gives one clear line and exit code 2, before any work."
import contextlib
import io

import pytest

from xtalnb.cli import build_parser, main


def run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def test_defaults_match_the_library():
    from xtalnb.discover import DEFAULTS
    a = build_parser().parse_args(["discover"])
    assert (a.model, a.n, a.steps, a.relax_n, a.relax_max_steps, a.jobs, a.threads) == (
        "denovo-mp20", DEFAULTS["n"], DEFAULTS["steps"], DEFAULTS["relax_n"], DEFAULTS["relax_max_steps"], DEFAULTS["n_jobs"], DEFAULTS["n_threads"])


@pytest.mark.parametrize("argv, words", [
    (["--n", "0"], ["n must be an integer >= 1", "0"]),
    (["--n", "2", "--relax-n", "-1"], ["relax_n"]),
    (["--n", "2", "--filters", "spp", "density"], ["unknown filter", "density"]),
    (["--n", "2", "--model", "no-such-model"], ["no-such-model"]),
    (["--n", "2", "--model", "csp-mp20"], ["de novo"]),
    (["--n", "2", "--steps", "0"], ["steps must be"]),
])
def test_bad_input_is_one_clear_error(tmp_path, argv, words):
    code, err = run(["discover", "--out-dir", str(tmp_path), "--no-progress", *argv])
    assert code == 2, err
    assert err.startswith("xtalnb discover: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not any(tmp_path.iterdir())                      # nothing written


def test_existing_run_is_kept(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "structures.csv").write_text("keep me\n")
    code, err = run(["discover", "--n", "2", "--out-dir", str(tmp_path), "--run-name", "mine", "--no-progress"])
    assert code == 2 and "exists" in err and "overwrite" in err, err
    assert (tmp_path / "mine" / "structures.csv").read_text() == "keep me\n"
