"""Tests for xtalnb.data on the shared data: row counts against the data README, the pymatgen round trip on 500 MP-20 subset
structures, the parse cache, bad input, batching, and the download code against a throw-away HTTP server on 127.0.0.1."""
import gzip
import hashlib
import re
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xtalnb import data, download
from xtalnb.crystal import Crystal

ROOT = data.data_root()
README = ROOT / "README.md"
pytestmark = pytest.mark.skipif(not (ROOT / "mp_20_partial").is_dir(), reason="the shared data (../shared/data) is not present")


def _num(s):
    return int(s.replace(",", ""))


def readme_counts() -> dict:
    "{(dataset name, split): rows} read from the shared data README's table."
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 5 or not cells[1].endswith("/"):
            continue
        folder, counts = cells[1].rstrip("/"), cells[3]
        if folder == "aflow_elastic":
            m = re.search(r"bulk:\s*([\d,]+)\s*/\s*([\d,]+)\s*/\s*([\d,]+)", counts)
            assert m and "shear likewise" in counts, counts
            for name in ("aflow_bulk_modulus", "aflow_shear_modulus"):
                rows.update({(name, s): _num(v) for s, v in zip(("train", "val", "test"), m.groups())})
        elif folder == "dos_json_format_fixture":
            rows[("dos_json", "all")] = _num(re.fullmatch(r"[\d,]+", counts).group())
        else:
            name = {"mp_20_partial": "mp20_subset"}.get(folder, folder)
            for split, v in re.findall(r"(train|val|test) ([\d,]+)", counts):
                rows[(name, split)] = _num(v)
    return rows


def test_row_counts_match_readme():
    rows = readme_counts()
    assert len(rows) == 3 + 3 + 2 + 2 + 2 + 6 + 1, rows   # mp_20, mp_20_partial, perov_5, carbon_24, mpts_52, aflow, dos
    assert [rows[("mp_20", s)] for s in ("train", "val", "test")] == [26117, 9047, 9046]
    for (name, split), n in rows.items():
        if name == "mp20_subset":
            continue
        assert data.count_rows(name, split) == n, (name, split)
    # mp20_subset merges the partial train and val files into its train split
    assert data.count_rows("mp20_subset", "train") == rows[("mp20_subset", "train")] + rows[("mp20_subset", "val")]
    assert data.count_rows("mp20_subset", "test") == rows[("mp20_subset", "test")]
    tr, te = data.load_dataset("mp20_subset", "train"), data.load_dataset("mp20_subset", "test")
    assert len(tr) + len(tr.failed) == rows[("mp20_subset", "train")] + rows[("mp20_subset", "val")]
    assert len(te) + len(te.failed) == rows[("mp20_subset", "test")]
    assert len(data.load_dataset("dos_json", "all")) == rows[("dos_json", "all")]


def test_round_trip_structure_matcher_500():
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure
    df = pd.read_csv(ROOT / "mp_20_partial" / "test.csv.gz", nrows=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_str(cif, fmt="cif") for cif in df.cif]
    sm = StructureMatcher()
    bad = [mid for mid, s in zip(df.material_id, structures) if not sm.fit(s, Crystal.from_structure(s).to_structure())]
    assert len(structures) == 500 and not bad, bad
    # and the cached dataset holds the same crystals as a direct parse
    cached = {c.id: c for c in data.load_dataset("mp20_subset", "test")}
    for mid, s, fe in zip(df.material_id, structures, df.formation_energy_per_atom):
        c = cached[mid]
        assert c.props["formation_energy_per_atom"] == fe
        assert [sp.Z for sp in s.species] == c.atomic_numbers.tolist()
        assert np.allclose(np.abs(np.linalg.det(s.lattice.matrix)), c.volume, rtol=1e-12)
        d = c.frac_coords @ c.lattice - s.cart_coords   # same positions up to a lattice translation
        f = np.linalg.solve(c.lattice.T, d.T).T
        assert np.allclose(f, np.round(f), atol=1e-8)


def test_props_attached():
    tr = data.load_dataset("mp20_subset", "train")
    for key in ("formation_energy_per_atom", "band_gap", "e_above_hull", "spacegroup.number", "material_id"):
        assert key in tr[0].props
    assert all(c.id == c.props["material_id"] for c in tr[:100])
    c24 = data.load_dataset("carbon_24", "val", limit=10, progress=False)
    assert all(set(c.atomic_numbers.tolist()) == {6} and "energy_per_atom" in c.props for c in c24)
    mp52 = data.load_dataset("mpts_52", "test", limit=10, progress=False)
    assert {"energy_above_hull", "formation_energy_per_atom", "year"} <= set(mp52[0].props)
    sh = data.load_dataset("aflow_shear_modulus", "val", limit=10, progress=False)
    assert all(c.props["shear_modulus"] > 0 for c in sh)


def test_bad_input(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown dataset 'mp20'"):
        data.load_dataset("mp20", "train")
    with pytest.raises(ValueError, match="unknown split 'val' for dataset 'mp20_subset'"):
        data.load_dataset("mp20_subset", "val")
    with pytest.raises(FileNotFoundError, match=r"perov_5/train.*download_dataset\('perov_5'\)"):
        data.load_dataset("perov_5", "train", root=tmp_path)
    monkeypatch.setenv("XTALNB_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="XTALNB_DATA"):
        data.load_dataset("perov_5", "val")


def test_failed_cif_recorded_and_cache_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("XTALNB_CACHE", str(tmp_path / "cache"))
    df = pd.read_csv(ROOT / "perov_5" / "val.csv.gz", nrows=4)
    df.loc[2, "cif"] = "not a cif"
    (tmp_path / "perov_5").mkdir()
    df.to_csv(tmp_path / "perov_5" / "val.csv", index=False)
    with pytest.warns(UserWarning, match="1 CIF"):
        ds = data.load_dataset("perov_5", "val", root=tmp_path, progress=False)
    assert len(ds) == 3 and [i for i, _ in ds.failed] == [str(df.material_id[2])] and not ds.from_cache
    with pytest.warns(UserWarning):
        assert data.load_dataset("perov_5", "val", root=tmp_path, progress=False).from_cache
    with pytest.raises(ValueError, match=str(df.material_id[2])):
        data.load_dataset("perov_5", "val", root=tmp_path, progress=False, strict=True)
    df.drop(index=2).to_csv(tmp_path / "perov_5" / "val.csv", index=False)
    ds = data.load_dataset("perov_5", "val", root=tmp_path, progress=False)
    assert len(ds) == 3 and not ds.failed and not ds.from_cache
    # a corrupted cache file is re-parsed, not trusted
    for p in (tmp_path / "cache" / "parsed").glob("*.npz"):
        p.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        assert len(data.load_dataset("perov_5", "val", root=tmp_path, progress=False)) == 3


def test_batching_and_num_atoms_distribution():
    te = data.load_dataset("mp20_subset", "test")
    p = data.num_atoms_distribution(te)
    n = np.array([c.num_atoms for c in te])
    assert len(p) == n.max() == 20 and np.isclose(p.sum(), 1)
    assert all(p[k - 1] == np.mean(n == k) for k in range(1, 21))
    rng_draw = np.random.default_rng(0).choice(np.arange(1, 21), size=200_000, p=p)
    assert abs(rng_draw.mean() - n.mean()) < 0.05
    batches = list(data.iterate_batches(te[:100], 32, shuffle=True, seed=1))
    assert [b.num_graphs for b in batches] == [32, 32, 32, 4]
    ids = [i for b in batches for i in b.meta["id"]]
    assert sorted(ids) == sorted(c.id for c in te[:100])
    b = batches[0]
    assert b.atomic_numbers.shape[0] == int(b.num_atoms.sum()) and b.lattice.shape == (32, 3, 3)
    assert "formation_energy_per_atom" in b.props


# ---------------------------------------------------------------- downloads against a local HTTP server
class _Handler(BaseHTTPRequestHandler):
    files: dict = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        cut = "truncated" in self.path
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3] if cut else body)
        self.wfile.flush()


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_good_corrupt_missing_interrupted(server, tmp_path):
    carbon = gzip.decompress((ROOT / "carbon_24" / "test.csv.gz").read_bytes())
    corrupt = bytearray(carbon)
    corrupt[len(corrupt) // 2] ^= 0x20
    _Handler.files = {"/data/carbon_24/test.csv": carbon, "/data/carbon_24/val.csv": bytes(corrupt),
                      "/truncated/carbon.csv": carbon}
    out = download.download_dataset("carbon_24", "test", root=tmp_path, mirror=server, progress=False)
    assert out["test"].read_bytes() == carbon and out["test"] == tmp_path / "carbon_24" / "test.csv"
    # the downloaded file is what load_dataset reads
    assert len(data.load_dataset("carbon_24", "test", root=tmp_path, limit=5, progress=False)) == 5
    with pytest.raises(download.ChecksumError, match="SHA-256"):
        download.download_dataset("carbon_24", "val", root=tmp_path, mirror=server, progress=False)
    with pytest.raises(FileNotFoundError, match="404"):
        download.download_dataset("carbon_24", "train", root=tmp_path, mirror=server, progress=False)
    with pytest.raises(OSError, match="interrupted"):
        download.download_file(f"{server}/truncated/carbon.csv", tmp_path / "t.csv", sha256=hashlib.sha256(carbon).hexdigest(),
                           progress=False)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["carbon_24/test.csv"], left   # no partial or corrupted file anywhere
    # an existing file is verified, not re-downloaded; a tampered one is reported
    (tmp_path / "carbon_24" / "test.csv").write_bytes(bytes(corrupt))
    with pytest.raises(download.ChecksumError):
        download.download_dataset("carbon_24", "test", root=tmp_path, mirror=server, progress=False)


def test_download_sha1_fallback_and_unverified(server, tmp_path):
    payload = b"material_id,cif\n" + b"x,y\n" * 5000
    sha1 = hashlib.sha1(b"blob %d\0" % len(payload) + payload).hexdigest()
    _Handler.files = {"/f.csv": payload}
    with pytest.warns(UserWarning, match="git blob SHA-1"):
        download.download_file(f"{server}/f.csv", tmp_path / "a.csv", git_sha1=sha1, progress=False)
    with pytest.raises(download.ChecksumError, match="git blob SHA-1"):
        download.download_file(f"{server}/f.csv", tmp_path / "b.csv", git_sha1="0" * 40, progress=False)
    with pytest.warns(UserWarning, match="CANNOT be verified"):
        download.download_file(f"{server}/f.csv", tmp_path / "c.csv", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "c.csv"]


def test_registry_urls_pinned():
    for name, reg in download.REGISTRY.items():
        for split, e in reg["files"].items():
            assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/data/\w+/(train|val|test)\.csv", e["url"])
            assert re.fullmatch(r"[0-9a-f]{40}", e["git_sha1"]) and (e["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", e["sha256"]))
            assert name in data.DATASETS and split in data.DATASETS[name]["splits"]
