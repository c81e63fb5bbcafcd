"""The classifier: safe loading of the original's pickles, scores and output formats."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from virnucflow.models.classifier import classify, load_classifier
from virnucflow.errors import ModelFileError
from virnucflow.steps.predict import highest_scores, read_predictions, write_predictions
from virnucflow.io.tables import write_tsv

from .conftest import ORIGINAL, REFERENCE

# Saves a classifier exactly as the original's train.py does: the class is
# defined in the script itself (__main__) and the whole module is pickled.
PICKLE_LIKE_ORIGINAL = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    import torch.nn.functional as F
    torch.set_num_threads(1)  # as the test below: a CPU matmul's rounding can depend on its threads

    class MLPClassifier(nn.Module):
        def __init__(self, input_dim, hidden_dim, num_class):
            super(MLPClassifier, self).__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)
        def forward(self, x):
            x = self.hidden_layer(x)
            x = self.bn1(x)
            x = F.relu(x)
            x = self.dropout(x)
            return self.output_layer(x)

    torch.manual_seed(7)
    model = MLPClassifier(3328, 512, 2)
    model.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        model(torch.randn(64, 3328) * 2 + 0.5)
    model.eval()
    torch.save(model, sys.argv[1])
    torch.save(model.state_dict(), sys.argv[2])
    x = torch.randn(10, 3328)
    torch.save({"x": x, "p": F.softmax(model(x), dim=1).detach()}, sys.argv[3])
    """
)


@pytest.fixture(scope="module")
def original_pickles(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    paths = [d / "500_model.pth", d / "state_dict.pth", d / "expected.pt"]
    subprocess.run([sys.executable, "-c", PICKLE_LIKE_ORIGINAL, *map(str, paths)], check=True)
    return paths


def test_whole_module_pickle_from_main_loads_safely(original_pickles):
    whole, state, expected = original_pickles
    exp = torch.load(expected, weights_only=True)
    for path in (whole, state):
        model, meta = load_classifier(path)
        assert meta == {"input_dim": 3328, "hidden_dim": 512, "demo_model": False}
        threads = torch.get_num_threads()  # earlier tests may have set another count in this process
        torch.set_num_threads(1)
        try:
            got = classify(model, exp["x"])
        finally:
            torch.set_num_threads(threads)
        # Same float32 operations on the same CPU with the same threads: identical.
        assert torch.equal(got, exp["p"])


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    code = textwrap.dedent(
        f"""
        import os, sys, torch
        class Payload:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        torch.save({{"hidden_layer.weight": Payload()}}, sys.argv[1])
        """
    )
    subprocess.run([sys.executable, "-c", code, str(evil)], check=True)
    with pytest.raises(ModelFileError) as err:
        load_classifier(evil)
    assert str(err.value) == (
        f"{evil}: refused to load: the pickle references posix.system, which a VirNucPro "
        "classifier never contains (possibly malicious)"
    )
    assert not marker.exists()


def test_unknown_main_class_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    code = textwrap.dedent(
        """
        import sys, torch
        class Other(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.hidden_layer = torch.nn.Linear(4, 3)
        torch.save(Other(), sys.argv[1])
        """
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    with pytest.raises(ModelFileError, match=r"refused to load: the pickle references __main__\.Other"):
        load_classifier(path)


def test_truncated_and_wrong_files(tmp_path, original_pickles):
    whole = original_pickles[0]
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match=rf"^{cut}: truncated or not a PyTorch file"):
        load_classifier(cut)
    text = tmp_path / "notes.pth"
    text.write_text("not a model\n")
    with pytest.raises(ModelFileError, match=rf"^{text}: truncated or not a PyTorch file"):
        load_classifier(text)
    wrong = tmp_path / "wrong.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ModelFileError) as err:
        load_classifier(wrong)
    assert str(err.value) == (
        f"{wrong}: not a VirNucPro classifier: missing hidden_layer.weight, hidden_layer.bias, "
        "output_layer.weight, output_layer.bias"
    )
    with pytest.raises(ModelFileError, match=rf"^{tmp_path / 'absent.pth'}: classifier file not found$"):
        load_classifier(tmp_path / "absent.pth")


def test_feature_width_mismatch_is_explained(original_pickles):
    model, _ = load_classifier(original_pickles[0])
    with pytest.raises(ModelFileError) as err:
        classify(model, torch.zeros(3, 1280 + 768))
    assert str(err.value).startswith("classifier expects 3328-wide features but the embeddings are 2048 wide")


@pytest.mark.parametrize("name", ["test_with_orfs", "test_fixed_500bp"])
def test_prediction_file_format_matches_original(tmp_path, name):
    """Scores re-written from their float32 values give the original's bytes."""
    ref = REFERENCE / f"{name}_prediction_results.txt"
    df = read_predictions(ref)
    scores = df[["score1", "score2"]].to_numpy(dtype=np.float32)
    write_predictions(tmp_path / "p.txt", df["Sequence_ID"].tolist(), scores)
    assert (tmp_path / "p.txt").read_bytes() == ref.read_bytes()


@pytest.mark.parametrize(
    "source,expected",
    [
        (REFERENCE / "test_with_orfs_prediction_results.txt", REFERENCE / "test_with_orfs_prediction_results_highestscore.csv"),
        (REFERENCE / "test_fixed_500bp_prediction_results.txt", REFERENCE / "test_fixed_500bp_prediction_results_highestscore.csv"),
        # made for VirNucFlow, expected files written by the original's aggregation code
        (ORIGINAL / "agg_mixed.prediction_results.txt", ORIGINAL / "agg_mixed.prediction_results_highestscore.csv"),
        (ORIGINAL / "agg_lambda.prediction_results.txt", ORIGINAL / "agg_lambda.prediction_results_highestscore.csv"),
    ],
    ids=lambda p: p.name,
)
def test_aggregation_byte_identical(tmp_path, source, expected):
    write_tsv(tmp_path / "h.csv", highest_scores(read_predictions(source)))
    assert (tmp_path / "h.csv").read_bytes() == expected.read_bytes()


def test_aggregation_tie_counts_as_virus():
    df = pd.DataFrame({"Sequence_ID": ["a_chunk_1F1", "a_chunk_1R2"], "score1": [0.5, 0.9], "score2": [0.5, 0.1]})
    # max(score2)=0.5 < max(score1)=0.9 across frames; with only the tie it would be True
    assert highest_scores(df)["Is_Virus"].tolist() == [False]
    assert highest_scores(df.iloc[:1])["Is_Virus"].tolist() == [True]


def test_demo_banner_is_first_line(tmp_path):
    write_predictions(tmp_path / "p.txt", ["x_chunk_1F1"], np.array([[0.25, 0.75]], np.float32), demo=True)
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert lines[0].startswith("# DEMO MODELS")
    assert lines[1:] == ["Sequence_ID\tPrediction\tscore1\tscore2", "x_chunk_1F1\tvirus\t0.25\t0.75"]
    write_tsv(tmp_path / "h.csv", highest_scores(read_predictions(tmp_path / "p.txt")), demo=True)
    assert (tmp_path / "h.csv").read_text().splitlines()[1:] == ["Modified_ID\tIs_Virus", "x_chunk_1\tTrue"]
