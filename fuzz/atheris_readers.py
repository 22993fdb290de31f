"""On-demand coverage-guided fuzzing of tinydl's file readers with atheris (not collected by
pytest, not imported by the package).

    pip install atheris
    python fuzz/atheris_readers.py KIND [atheris/libFuzzer options, e.g. -runs=100000]

KIND is one of: model_npz compressed_npz transform_npz profile_toml data_npz data_npy
data_csv onnx.  The input bytes are written to a file of the right extension and handed to
every public reader of that kind (tests/fuzz/mutators.py READERS); a documented typed error
(docs/reliability.md) is fine, anything else is reported by atheris as a crash.  A corpus of
valid seeds is written to fuzz/corpus/KIND on first use.
"""
import importlib.util
import os
import sys
import tempfile
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
EXT = {"model_npz": ".npz", "compressed_npz": ".npz", "transform_npz": ".npz",
       "profile_toml": ".toml", "data_npz": ".npz", "data_npy": ".npy", "data_csv": ".csv",
       "onnx": ".onnx"}


def _mutators():
    spec = importlib.util.spec_from_file_location(
        "_atheris_mutators", os.path.join(REPO, "tests", "fuzz", "mutators.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    import atheris
    if len(sys.argv) < 2 or sys.argv[1] not in EXT:
        sys.exit(f"usage: {sys.argv[0]} KIND [libFuzzer options]; KIND in {', '.join(EXT)}")
    kind = sys.argv.pop(1)
    mut = _mutators()
    errors = mut.typed_errors()
    corpus = os.path.join(REPO, "fuzz", "corpus", kind)
    if not os.path.isdir(corpus):
        os.makedirs(corpus)
        seeds = mut.make_seeds(tempfile.mkdtemp())
        for i, p in enumerate(seeds[kind]):
            with open(p, "rb") as src, open(os.path.join(corpus, f"seed{i}"), "wb") as dst:
                dst.write(src.read())
    work = tempfile.mkdtemp(prefix="tinydl-atheris-")
    path = os.path.join(work, "input" + EXT[kind])
    warnings.simplefilter("ignore")

    def one(data: bytes):
        with open(path, "wb") as fh:
            fh.write(data)
        for reader in mut.READERS[kind]:
            try:
                reader(path)
            except errors:
                pass

    atheris.instrument_all()
    atheris.Setup(sys.argv + [corpus], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
