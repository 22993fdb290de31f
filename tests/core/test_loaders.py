"""Loaders for the paper's data sets in their published formats, on small files written here."""
import numpy as np
import pytest

from tinydl.data import (
    DataError,
    load_dsa_folder,
    load_isolet,
    load_real,
    load_ujiindoorloc,
    split_dataset,
    uji_rssi_to_features,
)

UJI_TAIL = ["LONGITUDE", "LATITUDE", "FLOOR", "BUILDINGID", "SPACEID", "RELATIVEPOSITION",
            "USERID", "PHONEID", "TIMESTAMP"]


def write_dsa(root, activities=(1, 2, 19), subjects=(1, 8), segments=(1, 2, 60), seed=0):
    """UCI's layout: aNN/pM/sKK.txt, each 125 rows x 45 comma-separated values."""
    rng = np.random.default_rng(seed)
    data = {}
    for a in activities:
        for p in subjects:
            for s in segments:
                d = root / f"a{a:02d}" / f"p{p}"
                d.mkdir(parents=True, exist_ok=True)
                seg = np.round(rng.standard_normal((125, 45)) + a, 4)
                (d / f"s{s:02d}.txt").write_text(
                    "\n".join(",".join(f"{v:.4f}" for v in row) for row in seg) + "\n")
                data[(a, p, s)] = seg
    return data


def test_dsa_folder_layout(tmp_path):
    data = write_dsa(tmp_path / "data")
    (tmp_path / "data" / "readme.txt").write_text("stray file")
    for root in (tmp_path, tmp_path / "data"):           # the zip's parent or data/ itself
        ds = load_dsa_folder(str(root))
        assert ds.X_train.shape == (3 * 2 * 3, 125 * 45) and ds.X_test is None
        assert ds.sample_shape == (125, 45) and ds.application == "smart-sensing"
        # folder order: activity, subject, then segment by number (s60 after s02)
        assert ds.y_train.tolist() == [0] * 6 + [1] * 6 + [18] * 6
        assert ds.groups.tolist() == ([1] * 3 + [8] * 3) * 3
        np.testing.assert_allclose(ds.X_train[2].reshape(125, 45), data[(1, 1, 60)],
                                   rtol=1e-6)
    assert load_real(str(tmp_path)).application == "smart-sensing"


@pytest.mark.parametrize("rows,cols,match", [(124, 45, "124 rows x 45 columns"),
                                             (125, 44, "125 rows x 44 columns")])
def test_dsa_bad_segment(tmp_path, rows, cols, match):
    write_dsa(tmp_path, activities=(1,), subjects=(1,), segments=(1,))
    (tmp_path / "a01" / "p1" / "s02.txt").write_text("\n".join([",".join(["1"] * cols)] * rows))
    with pytest.raises(DataError, match=match):
        load_dsa_folder(str(tmp_path))


def test_dsa_not_a_layout(tmp_path):
    with pytest.raises(DataError, match="a01..a19"):
        load_dsa_folder(str(tmp_path))
    (tmp_path / "a01").mkdir()
    with pytest.raises(DataError, match="no segment files"):
        load_dsa_folder(str(tmp_path))


def test_dsa_npz_and_split(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 125, 45)).astype(np.float16)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "dsa_small.npz", X=X, y=y)
    ds = load_real(str(tmp_path / "dsa_small.npz"))
    assert ds.application == "smart-sensing" and ds.sample_shape == (125, 45)
    assert ds.X_train.shape == (40, 5625) and ds.X_train.dtype == np.float32
    sp = split_dataset(ds, 0.2, seed=0)
    assert sp.X_test.shape == (8, 5625) and np.bincount(sp.y_test).tolist() == [2] * 4
    # the same seed gives the same split; training rows keep their order
    sp2 = split_dataset(ds, 0.2, seed=0)
    assert np.array_equal(sp.X_test, sp2.X_test)
    idx = [np.flatnonzero((ds.X_train == r).all(1))[0] for r in sp.X_train]
    assert idx == sorted(idx)
    np.savez(tmp_path / "dsa_wrong.npz", X=np.zeros((4, 10, 45)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"expected X of shape \(n, 125, 45\)"):
        load_real(str(tmp_path / "dsa_wrong.npz"))


def write_uji(path, rows):
    """rows: (waps dict {index: rssi}, floor, building)."""
    head = [f"WAP{i:03d}" for i in range(1, 521)] + UJI_TAIL
    lines = [",".join(head)]
    for waps, floor, bld in rows:
        w = [100] * 520
        for j, v in waps.items():
            w[j] = v
        lines.append(",".join(map(str, w + [-7600.5, 4864900.2, floor, bld, 101, 2, 1, 14,
                                            1371713733])))
    path.write_text("\n".join(lines) + "\n")


def test_ujiindoorloc_csv(tmp_path):
    write_uji(tmp_path / "trainingData.csv", [({0: -104, 5: -40}, 0, 0), ({1: 0}, 3, 1),
                                              ({2: -70}, 4, 2), ({}, 0, 0)])
    write_uji(tmp_path / "validationData.csv", [({0: -60}, 1, 0), ({3: -80}, 4, 2)])
    for src in (tmp_path, tmp_path / "trainingData.csv"):
        ds = load_real(str(src))
        assert ds.application == "indoor-localization"
        assert ds.X_train.shape == (4, 520) and ds.X_test.shape == (2, 520)
        # 100 (not detected) -> -105 dBm -> 0; -104 dBm -> 1/105; 0 dBm -> 1
        assert ds.X_train[3].max() == 0
        np.testing.assert_allclose(ds.X_train[0, [0, 5, 6]], [1 / 105, 65 / 105, 0], rtol=1e-6)
        assert ds.X_train[1, 1] == 1
        # class = (building, floor) pair over the pairs of both files: (0,0) (0,1) (1,3) (2,4)
        assert ds.y_train.tolist() == [0, 2, 3, 0] and ds.y_test.tolist() == [1, 3]


def test_ujiindoorloc_errors(tmp_path):
    p = tmp_path / "trainingData.csv"
    p.write_text("WAP001,WAP002\n1,2\n")
    with pytest.raises(DataError, match="header has 2 columns, expected 529"):
        load_ujiindoorloc(str(p))
    write_uji(p, [({0: 20}, 0, 0)])
    with pytest.raises(DataError, match="outside -110..0 dBm.*WAP001: 20"):
        load_ujiindoorloc(str(p))
    with pytest.raises(DataError, match="give trainingData.csv"):
        write_uji(tmp_path / "validationData.csv", [({}, 0, 0)])
        load_real(str(tmp_path / "validationData.csv"))


def test_ujiindoorloc_npz_forms(tmp_path):
    rng = np.random.default_rng(0)
    W = np.where(rng.random((6, 520)) < 0.9, 100, -rng.integers(30, 104, (6, 520)))
    np.savez(tmp_path / "ujiindoorloc.npz", X_train=W, y_train=np.arange(6) % 3,
             X_test=W[:2], y_test=[0, 1])
    ds = load_real(str(tmp_path / "ujiindoorloc.npz"))
    assert ds.application == "indoor-localization"
    assert 0 <= ds.X_train.min() and ds.X_train.max() <= 1
    np.testing.assert_array_equal(ds.X_train, uji_rssi_to_features(W))
    # UCI's 529 columns stored as arrays
    tail = np.tile([-7600.0, 4864900.0, 2, 1, 101, 2, 1, 14, 1371713733], (6, 1))
    np.savez(tmp_path / "uji_cols.npz", trainingData=np.hstack([W, tail]),
             validationData=np.hstack([W[:1], tail[:1]]))
    ds = load_real(str(tmp_path / "uji_cols.npz"))
    assert ds.X_train.shape == (6, 520) and ds.y_train.tolist() == [0] * 6
    np.savez(tmp_path / "uji_bad.npz", X_train=np.zeros((3, 7)), y_train=[0, 1, 2])
    with pytest.raises(DataError, match="7 features, expected 520"):
        load_real(str(tmp_path / "uji_bad.npz"))


def write_isolet(path, labels, seed):
    rng = np.random.default_rng(seed)
    path.write_text("".join(", ".join(f"{v:.4f}" for v in rng.uniform(-1, 1, 617))
                            + f", {c}.\n" for c in labels))


def test_isolet(tmp_path):
    write_isolet(tmp_path / "isolet1+2+3+4.data", [1, 2, 26, 1], 0)
    write_isolet(tmp_path / "isolet5.data", [26, 3], 1)
    for src in (tmp_path, tmp_path / "isolet1+2+3+4.data"):
        ds = load_real(str(src))
        assert ds.application == "speech-recognition"
        assert ds.X_train.shape == (4, 617) and ds.X_test.shape == (2, 617)
        assert ds.y_train.tolist() == [0, 1, 25, 0] and ds.y_test.tolist() == [25, 2]
    write_isolet(tmp_path / "isolet5.data", [27], 1)
    with pytest.raises(DataError, match="outside the integers 1..26"):
        load_isolet(str(tmp_path))
    (tmp_path / "isolet5.data").write_text("1, 2, 3.\n")
    with pytest.raises(DataError, match="row 1 has 3 columns, expected 618"):
        load_isolet(str(tmp_path))


def test_generic_npz_and_missing(tmp_path):
    np.savez(tmp_path / "any.npz", X_train=np.ones((4, 3)), y_train=[0, 1, 0, 1],
             X_test=np.ones((2, 3)), y_test=[0, 1])
    ds = load_real(str(tmp_path / "any.npz"))
    assert ds.application == "" and ds.X_test.shape == (2, 3)
    assert load_real("digits").X_train.shape == (1258, 64)
    with pytest.raises(DataError, match="no such data file or folder"):
        load_real(str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="neither Daily and Sports"):
        load_real(str(tmp_path))
