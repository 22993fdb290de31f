"""Dataset loaders: the bundled set, .npz/.npy/CSV, and clear errors for damaged files."""
import numpy as np
import pytest

from tinydl.data import DataError, load_dataset


def test_bundled_digits_is_real_and_split():
    ds = load_dataset("digits")
    assert ds.X_train.shape == (1258, 64) and ds.X_test.shape == (539, 64)
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
    # pixel counts of 4x4 blocks: integers 0..16
    assert ds.X_train.min() == 0 and ds.X_train.max() == 16
    assert np.array_equal(ds.X_train, np.round(ds.X_train))


def test_npz_variants(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "a.npz", X=X, y=y)
    ds = load_dataset(str(tmp_path / "a.npz"))
    assert np.array_equal(ds.X_train, X) and np.array_equal(ds.y_train, y) and ds.X_test is None
    # Daily and Sports layout: (n, 125, 45) flattened to (n, 5625)
    np.savez(tmp_path / "b.npz", X_train=np.zeros((2, 5, 3)) + 1, y_train=[0, 1],
             X_test=np.ones((1, 5, 3)), y_test=[1])
    ds = load_dataset(str(tmp_path / "b.npz"))
    assert ds.X_train.shape == (2, 15) and ds.X_test.shape == (1, 15)


def test_csv_with_header_and_label_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("f1,f2,label\n1,2,0\n3,4,1\n")
    ds = load_dataset(str(p))
    assert np.array_equal(ds.X_train, [[1, 2], [3, 4]]) and np.array_equal(ds.y_train, [0, 1])
    ds = load_dataset(str(p), label_column=0)
    assert np.array_equal(ds.y_train, [1, 3])


@pytest.mark.parametrize("setup,match", [
    (lambda p: open(p, "wb").write(b"PK\x03\x04garbage"), "not a readable .npz"),
    (lambda p: np.savez(p, foo=np.zeros(3)), "expected X_train"),
    (lambda p: np.savez(p, X=np.array([[1.0, np.nan]]), y=[0]), "NaN"),
    (lambda p: np.savez(p, X=np.zeros((3, 2)), y=[0, 1]), "2 labels for 3 samples"),
    (lambda p: np.savez(p, X_train=np.zeros((2, 2)), y_train=[0, 1],
                        X_test=np.zeros((1, 3)), y_test=[0]), "3 features"),
    (lambda p: np.savez(p, X=np.zeros((0, 2)), y=np.zeros(0)), "empty"),
    (lambda p: np.savez(p, X=np.array([["a", "b"]]), y=[0]), "expected numbers"),
])
def test_bad_npz_files(tmp_path, setup, match):
    p = tmp_path / "bad.npz"
    setup(str(p))
    with pytest.raises(DataError, match=match):
        load_dataset(str(p))


def test_truncated_npz(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, X=np.random.rand(50, 4), y=np.zeros(50))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError):
        load_dataset(str(p))


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, X=np.array([[1, 2]], dtype=object), y=[0])
    with pytest.raises(DataError):
        load_dataset(str(p))


@pytest.mark.parametrize("text,match", [
    ("1,2,0\n3,4\n", "row 2 has 2 columns"),
    ("1,2,0\n1,x,0\n", "non-numeric"),
    ("", "empty"),
    ("1,2,0.5\n", "non-integer labels"),
])
def test_bad_csv(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=match):
        load_dataset(str(p))


def test_missing_and_unknown(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        load_dataset(str(tmp_path / "nope.npz"))
    p = tmp_path / "x.parquet"
    p.write_bytes(b"1")
    with pytest.raises(DataError, match="unknown data format"):
        load_dataset(str(p))


def test_npz_records_sample_shape_and_new_fields_default(tmp_path):
    np.savez(tmp_path / "s.npz", X=np.ones((3, 5, 2)), y=[0, 1, 0])
    ds = load_dataset(str(tmp_path / "s.npz"))
    assert ds.sample_shape == (5, 2) and ds.X_train.shape == (3, 10)
    d2 = load_dataset("digits")
    assert d2.sample_shape is None and d2.application == "" and d2.groups is None


def test_streams_apply_the_uji_rssi_conversion_by_a_rule_on_the_data(tmp_path):
    """Integer features of 520 columns whose every value is 100 or in -110..0 are
    UJIIndoorLoc RSSI: fit/evaluate/predict read them converted as load_real does
    (independent reference: the whole-array conversion), whatever the file's name."""
    from tinydl.data import open_stream, uji_rssi_to_features
    from tinydl.data.stream import detect_preprocessing
    rng = np.random.default_rng(0)
    W = rng.integers(-104, 1, (40, 520)).astype(np.int8)
    W[rng.random(W.shape) < 0.9] = 100
    y = rng.integers(0, 3, 40)
    path = tmp_path / "rooms.npz"  # no "uji" in the name: the rule reads the data
    np.savez(path, X_train=W, y_train=y, X_test=W[:10], y_test=y[:10])
    st = open_stream(str(path))
    assert st.preprocessing == "uji-rssi"
    got = np.concatenate([X for _, X, _ in st.chunks(16)])
    np.testing.assert_array_equal(got, uji_rssi_to_features(W))
    shuffled = np.concatenate([X for _, X, _ in st.shuffled(3).chunks(7)])
    order = np.random.default_rng(3).permutation(40)
    np.testing.assert_array_equal(shuffled, uji_rssi_to_features(W)[order])
    test = open_stream(str(path), split="test")
    assert test.preprocessing == "uji-rssi"
    # not the coding: floats, another width, a value outside, no "not detected" at all
    assert detect_preprocessing(W.astype(np.float32)) == "none"
    assert detect_preprocessing(W[:, :519]) == "none"
    bad = W.copy()
    bad[0, 0] = 5
    assert detect_preprocessing(bad) == "none"
    assert detect_preprocessing(np.full((3, 520), -50, np.int8)) == "none"


def test_real_uji_stream_matches_load_real(shared_data):
    from tinydl.data import load_real, open_stream
    path = str(shared_data / "ujiindoorloc.npz")
    ds = load_real(path)
    st = open_stream(path, split="test")
    X = np.concatenate([X for _, X, _ in st.chunks(512)])
    np.testing.assert_array_equal(X, ds.X_test)


def test_streams_read_multi_axis_samples_as_rows_in_c_order(tmp_path):
    # Daily and Sports keeps (125, 45) segments: a stream reads each as one row, as
    # load_real does, from the mapped file (no copy); a Fortran-ordered one is refused
    from tinydl.data import open_stream
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5, 4)).astype(np.float16)
    y = np.arange(30) % 3
    np.savez(tmp_path / "seg.npz", X=X, y=y)
    st = open_stream(str(tmp_path / "seg.npz"))
    assert st.n_features == 20
    rows = np.concatenate([c for _, c, _ in st.chunks(7)])
    np.testing.assert_array_equal(rows, X.reshape(30, 20).astype(np.float32))
    np.testing.assert_array_equal(rows, load_dataset(str(tmp_path / "seg.npz")).X_train)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    with pytest.raises(DataError, match=r"3-D \(shape \(30, 5, 4\)\) in Fortran order"):
        open_stream(str(tmp_path / "f.npy"), need_labels=False)
