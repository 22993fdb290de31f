"""``tinydl demo``: the bundled UJIIndoorLoc file and the JSON's headline keys (on the small
bundled digits, for time)."""
import json
import os

import numpy as np

import tinydl
from tinydl.cli import main

DATASETS = os.path.join(os.path.dirname(tinydl.__file__), "datasets")


def test_bundled_ujiindoorloc_loads_without_pickle():
    with np.load(os.path.join(DATASETS, "ujiindoorloc.npz"), allow_pickle=False) as z:
        assert z["X_train"].shape == (19937, 520) and z["X_test"].shape == (1111, 520)
        assert z["X_train"].dtype == np.int8
        assert set(np.unique(z["y_train"])) == set(range(13))
        assert len(z["y_test"]) == 1111
    readme = open(os.path.join(DATASETS, "README.md"), encoding="utf-8").read()
    assert "Torres-Sospedra" in readme and "CC BY 4.0" in readme and "310" in readme


def test_demo_default_is_ujiindoorloc():
    from tinydl.cli import demo
    p = __import__("argparse").ArgumentParser()
    demo.add_arguments(p)
    assert p.parse_args([]).data == "ujiindoorloc"


def test_demo_json_keys(tmp_path, capsys):
    out = tmp_path / "d.json"
    rc = main(["demo", "--data", "digits", "--json", str(out), "--plot", "", "--epochs", "3"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert {"dataset", "accuracy_tinydl", "accuracy_raw", "train_time_ratio", "size_reduction",
            "exec_time_ratio", "backend"} <= set(d)
    assert d["dataset"] == "digits.npz" and d["backend"] == d["tinydl"].get("backend",
                                                                              d["backend"])
    assert d["tinydl"]["scaling"] in ("standardize", "none")
    assert d["accuracy_tinydl"] > 0.5 and d["size_reduction"] > 1


def test_demo_holds_out_a_test_split_of_a_file_without_one(tmp_path, capsys):
    # X, y only (the Daily and Sports subset's layout, samples of several axes): reproduce's
    # split, 20% stratified with seed 0, said on the way
    with np.load(os.path.join(DATASETS, "digits.npz"), allow_pickle=False) as z:
        X = np.concatenate([z["X_train"], z["X_test"]]).reshape(-1, 8, 8)
        y = np.concatenate([z["y_train"], z["y_test"]])
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    out = tmp_path / "d.json"
    rc = main(["demo", "--data", str(tmp_path / "xy.npz"), "--json", str(out), "--plot", "",
               "--epochs", "2", "--max-train", "300"])
    assert rc == 0
    assert "has no test split: 20% of its samples held out" in capsys.readouterr().err
    from tinydl.data import load_real, split_dataset
    want = split_dataset(load_real(str(tmp_path / "xy.npz")), 0.2, 0)
    assert json.loads(out.read_text())["n_test"] == len(want.y_test)
