"""Model acquisition and model-file errors: one clear message naming the file and the problem."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import pytest
import torch

from virnucflow.steps.demo import build_demo_models, random_esm2, save_fair_esm
from virnucflow.errors import ModelFileError
from virnucflow.models import acquire
from virnucflow.models.manifest import check_models
from virnucflow.models.checkpoints import load_dnabert_s, load_esm2
from virnucflow.models.esm2 import ESM2Config

from .conftest import run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    build_demo_models({"esm2": d / "esm2.pt", "dnabert_s": d / "dnabert", "classifier": d / "clf.pth"}, seed=0)
    return d


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty model caches, offline: nothing can be found or fetched by accident."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("VIRNUCFLOW_RESOURCES", str(tmp_path / "resources"))
    # huggingface_hub reads these variables once, on import: a test that imported it (transformers)
    # earlier in this process would otherwise leave the real cache and online mode in force
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return tmp_path


def _check(demo, **override):
    args = dict(esm2=str(demo / "esm2.pt"), dnabert_s=str(demo / "dnabert"), classifier=str(demo / "clf.pth"))
    args.update(override)
    return check_models({**args, "download": False}, None)


def test_demo_models_validate(demo):
    manifest = _check(demo)
    assert manifest["esm2"]["dim"] == 32 and manifest["dnabert_s"]["dim"] == 48 and manifest["classifier"]["dim"] == 80
    assert all(manifest[k]["demo"] for k in manifest)


def test_known_esm_name_missing_offline(caches):
    path = caches / "torch" / "hub" / "checkpoints" / "esm2_t36_3B_UR50D.pt"
    with pytest.raises(ModelFileError) as err:
        acquire.resolve("esm2", "esm2_t36_3B_UR50D", allow_download=False)
    assert str(err.value) == (
        f"{path}: esm2_t36_3B_UR50D is not downloaded and models.download is off; put the file there or run: "
        f"wget -P {path.parent} https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t36_3B_UR50D.pt"
    )


def test_known_dnabert_name_missing_offline(caches):
    with pytest.raises(ModelFileError) as err:
        acquire.resolve("dnabert_s", "zhihan1996/DNABERT-S", allow_download=True)
    msg = str(err.value)
    assert msg.startswith(f"{caches / 'hf' / 'models--zhihan1996--DNABERT-S'}: zhihan1996/DNABERT-S is missing and could not be downloaded")
    assert "hf download zhihan1996/DNABERT-S" in msg


def test_known_classifier_is_downloaded_from_a_server(caches, demo, monkeypatch):
    """A real HTTP download (a server on the loopback interface stands in for GitHub)."""
    served = caches / "www"
    served.mkdir()
    shutil.copy(demo / "clf.pth", served / "500_model.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(acquire, "CLASSIFIER_URL", f"http://127.0.0.1:{server.server_port}/{{file}}")
        r = acquire.resolve("classifier", "virnucpro-500", allow_download=True)
        assert r.path == (caches / "resources" / "models" / "500_model.pth").resolve()
        assert r.path.read_bytes() == (demo / "clf.pth").read_bytes()
        with pytest.raises(ModelFileError) as err:  # the server has no 300_model.pth: 404
            acquire.resolve("classifier", "virnucpro-300", allow_download=True)
        assert "virnucpro-300 is missing and could not be downloaded (HTTP Error 404" in str(err.value)
        assert "wget -O" in str(err.value) and not (caches / "resources" / "models" / "300_model.pth").exists()
    finally:
        server.shutdown()


def test_missing_path(demo, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelFileError) as err:
        _check(demo, esm2=str(missing))
    assert str(err.value).startswith(f"{missing}: model file not found (models.esm2); give a local path or one of the known names (esm2_t6_8M_UR50D")


def test_known_name_of_the_wrong_kind(demo):
    with pytest.raises(ModelFileError, match=r"^models\.esm2: 'zhihan1996/DNABERT-S' is a models\.dnabert_s model, not a models\.esm2 one$"):
        _check(demo, esm2="zhihan1996/DNABERT-S")


def test_truncated_checkpoint(demo, tmp_path):
    cut = tmp_path / "esm2_cut.pt"
    cut.write_bytes((demo / "esm2.pt").read_bytes()[:20000])
    with pytest.raises(ModelFileError, match=rf"^{cut}: truncated or not a PyTorch checkpoint"):
        load_esm2(cut)


def test_wrong_architecture(demo):
    with pytest.raises(ModelFileError, match=r"config\.json: model_type 'bert' is not an ESM-2 \('esm'\) model$"):
        load_esm2(demo / "dnabert")
    with pytest.raises(ModelFileError, match=r"DNABERT-S must be a Hugging Face model directory"):
        load_dnabert_s(demo / "esm2.pt")
    with pytest.raises(ModelFileError, match=r"not a fair-esm ESM-2 checkpoint \(expected a dict with 'cfg' and 'model'; found \['bn1\.bias'"):
        # a classifier state dict given as ESM-2
        from virnucflow.models.classifier import load_classifier

        torch.save(load_classifier(demo / "clf.pth")[0].state_dict(), demo / "sd.pt")
        load_esm2(demo / "sd.pt")


def test_missing_and_unexpected_keys(tmp_path):
    model = random_esm2(ESM2Config(2, 32, 4), 0)
    save_fair_esm(model, tmp_path / "ok.pt")
    data = torch.load(tmp_path / "ok.pt", weights_only=False)
    del data["model"]["encoder.sentence_encoder.layers.1.fc2.bias"]
    data["model"]["encoder.sentence_encoder.layers.1.adapter.weight"] = torch.zeros(2)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError) as err:
        load_esm2(tmp_path / "bad.pt")
    assert str(err.value) == (
        f"{tmp_path / 'bad.pt'}: weights do not match ESM-2 bad (2 layers, 32 wide): 1 missing: layers.1.fc2.bias; "
        "1 unexpected: layers.1.adapter.weight"
    )


def test_config_and_weights_disagree(tmp_path):
    model = random_esm2(ESM2Config(2, 32, 4), 0)
    save_fair_esm(model, tmp_path / "m.pt")
    data = torch.load(tmp_path / "m.pt", weights_only=False)
    data["cfg"]["model"].encoder_embed_dim = 48
    torch.save(data, tmp_path / "m48.pt")
    with pytest.raises(ModelFileError, match=r"weights do not match ESM-2 m48 \(2 layers, 48 wide\): .*wrong shape \(file vs model\): embed_tokens\.weight \[33, 32\] vs \[33, 48\]"):
        load_esm2(tmp_path / "m48.pt")


def test_dnabert_directory_without_tokenizer(demo, tmp_path):
    d = tmp_path / "dn"
    shutil.copytree(demo / "dnabert", d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match=r"no tokenizer\.json \(DNABERT-S's BPE tokenizer is part of the model directory\)$"):
        load_dnabert_s(d)
    (d / "config.json").unlink()
    with pytest.raises(ModelFileError, match=rf"^{d}: not a Hugging Face model directory \(no config\.json\)$"):
        load_dnabert_s(d)


def test_classifier_width_must_match_the_embedding_models(demo, tmp_path):
    from virnucflow.steps.demo import random_classifier, save_original_classifier

    save_original_classifier(random_classifier(3328, 16, 0), tmp_path / "500_model.pth")
    res = run_cli("check-models", "--esm2", demo / "esm2.pt", "--dnabert-s", demo / "dnabert",
                  "--classifier", tmp_path / "500_model.pth", "--no-download", "--out", tmp_path / "m.json")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"virnucflow: error: {(tmp_path / '500_model.pth').resolve()}: the classifier takes 3328 features but "
        "DNABERT-S (48) + ESM-2 (32) give 80; VirNucPro's classifiers need the published DNABERT-S (768) and ESM-2 3B (2560)"
    )
    assert not (tmp_path / "m.json").exists()


def test_manifest_written(demo, tmp_path):
    res = run_cli("check-models", "--esm2", demo / "esm2.pt", "--dnabert-s", demo / "dnabert",
                  "--classifier", demo / "clf.pth", "--no-download", "--out", tmp_path / "m.json")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["esm2"]["format"] == "fair-esm" and manifest["dnabert_s"]["format"] == "huggingface"
