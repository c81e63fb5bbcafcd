"""The models VirNucFlow runs: one :class:`ModelSpec` per embedding model, and the classifiers.

Every list of models in the workflow derives from :func:`embedding_models`:
the rules' inputs and outputs, the manifests, the shard plans' token columns,
the jobs' time limits, ``virnucflow status``, the reports, ``fp32_compare``,
the selftest and the CLI's options. Their order is the classifier's feature
order: a frame's feature vector is the models' pooled vectors concatenated in
this order (VirNucPro: DNABERT-S 768 then ESM-2 2560).

Adding a model is one module and one registration:

- the module holds a ``torch.nn.Module`` satisfying
  :class:`~virnucflow.models.interface.EmbeddingModel`, a loader
  ``load(path) -> (model, metadata)`` and ``describe(path) -> dict`` (the
  manifest entry: at least ``dim``, ``demo``, ``description``);
- the registration is a :class:`ModelSpec` naming them, either appended to
  :data:`BUILT_IN` or published by any installed package under the entry-point
  group ``virnucflow.models`` (``toy = "my_package.toy:SPEC"``), which
  :func:`embedding_models` adds after the built-in ones. The config then takes
  ``models.<name>`` (and ``embedding.<name>`` for per-model options).

This module imports neither torch nor the model modules: Snakemake plans the
workflow from it. Loaders are named as ``"module:function"`` and imported when
a job runs them; a package's ``ModelSpec`` should likewise sit in a module that
imports no torch at its top (the Snakefile loads the entry points).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Literal

ENTRY_POINTS = "virnucflow.models"


def _esm2_tokens(protein_length: int) -> int:
    return protein_length + 2  # <cls> residues <eos>


def _dnabert_s_tokens(nucleotide_length: int) -> int:
    return -(-nucleotide_length // 4) + 2  # BPE pieces average 4-5 bases; [CLS] and [SEP]


@dataclass(frozen=True)
class ModelSpec:
    """One embedding model, as the workflow plans, fetches, checks, runs and reports it."""

    name: str  # config key (models.<name>, embedding.<name>), manifest key, output folder
    label: str  # for people: "ESM-2"
    reads: Literal["protein", "nucleotide"]  # which sequence of a frame it embeds
    loader: str  # "module:function", path -> (model with tokenizer, metadata)
    describe: str  # "module:function", path -> manifest entry (dim, demo, description, ...)
    tokens: Callable[[int], int]  # tokens of a sequence of that many letters (shard plans, time limits)
    tokens_per_second: int  # on one GPU in FP16 packed, for runtime: auto (benchmarks/results/README.md)
    start_seconds: int  # a job's start before its first token (imports, CUDA, weights)
    known_names: tuple[str, ...] = ()  # published names models.<name> may take instead of a path
    source: Literal["torch_hub", "huggingface"] | None = None  # where a known name is looked up and fetched
    url: str = ""  # download address of a known name ({name})
    files: tuple[str, ...] = ()  # the files of a Hugging Face repository that are fetched
    demo: str = ""  # the tiny random demo model's path (rule build_demo_models)
    demo_builder: str = ""  # "module:function", (path, seed) -> writes the demo model there, returns its width
    demo_is_dir: bool = False
    original_pt: tuple[str, str, str] | None = None  # the original VirNucPro's .pt of this model, for the
    # selftest: (file name with {case}, the key of its ID list, the key of a frame's vector in a dict or "" where
    # each frame's vector is a tensor)

    def frame_tokens(self, nucleotide_length: int, protein_length: int) -> int:
        """Tokens of one frame: the count of the sequence this model reads."""
        return self.tokens(nucleotide_length if self.reads == "nucleotide" else protein_length)

    @property
    def config_key(self) -> str:
        return f"models.{self.name}"

    def load(self, path: str) -> tuple[Any, dict]:
        return _function(self.loader)(path)

    def describe_file(self, path) -> dict:
        return _function(self.describe)(path)

    def build_demo(self, path, seed: int = 0) -> int:
        """Write the tiny random demo model to ``path``; returns its width."""
        return _function(self.demo_builder)(path, seed)


BUILT_IN: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="dnabert_s", label="DNABERT-S", reads="nucleotide",
        loader="virnucflow.models.checkpoints:load_dnabert_s",
        describe="virnucflow.models.acquire:describe_dnabert_s",
        tokens=_dnabert_s_tokens, tokens_per_second=1_500_000, start_seconds=60,
        known_names=("zhihan1996/DNABERT-S",), source="huggingface",
        files=("config.json", "pytorch_model.bin", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"),
        demo="resources/demo_models/dnabert_s_demo", demo_builder="virnucflow.steps.demo:build_demo_dnabert_s",
        demo_is_dir=True,
        original_pt=("{case}_output_1_DNABERT_S.pt", "nucleotide", "mean_representation"),
    ),
    ModelSpec(
        name="esm2", label="ESM-2", reads="protein",
        loader="virnucflow.models.checkpoints:load_esm2",
        describe="virnucflow.models.acquire:describe_esm2",
        tokens=_esm2_tokens, tokens_per_second=95_000, start_seconds=180,
        known_names=("esm2_t6_8M_UR50D", "esm2_t12_35M_UR50D", "esm2_t30_150M_UR50D", "esm2_t33_650M_UR50D",
                     "esm2_t36_3B_UR50D", "esm2_t48_15B_UR50D"),
        source="torch_hub", url="https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt",
        demo="resources/demo_models/esm2_demo.pt", demo_builder="virnucflow.steps.demo:build_demo_esm2",
        original_pt=("{case}_output_1_ESM.pt", "proteins", ""),
    ),
)


@dataclass(frozen=True)
class ClassifierSpec:
    file: str  # its file name in the workflow's resources/models/
    chunk_length: int  # the window length it was trained on


#: The original's published classifiers: name -> file and training window length.
CLASSIFIERS = {
    "virnucpro-500": ClassifierSpec("500_model.pth", 500),
    "virnucpro-300": ClassifierSpec("300_model.pth", 300),
}
#: Rows per forward pass of the classifier (``classifier.BATCH``), and so the step at which shards are cut
#: (virnucflow.steps.shard). Here, because the DAG is planned without importing torch.
CLASSIFIER_BATCH = 4096
CLASSIFIER_URL = "https://github.com/Li-Jing-1997/VirNucPro/raw/main/{file}"
CLASSIFIER_DEMO = "resources/demo_models/virnucpro_demo.pth"


@functools.lru_cache(maxsize=None)
def embedding_models() -> tuple[ModelSpec, ...]:
    """The embedding models in the classifier's feature order: the built-in ones, then those of the
    ``virnucflow.models`` entry points (by name)."""
    specs = list(BUILT_IN)
    for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        spec = ep.load()
        if not isinstance(spec, ModelSpec) or spec.name != ep.name:
            raise TypeError(f"entry point {ENTRY_POINTS}:{ep.name} = {ep.value} is not a ModelSpec named {ep.name!r}")
        if spec.name not in {s.name for s in specs}:
            specs.append(spec)
    return tuple(specs)


def names() -> tuple[str, ...]:
    """The embedding models' names, in feature order."""
    return tuple(s.name for s in embedding_models())


def model_kinds() -> tuple[str, ...]:
    """Every model the config names: the embedding models and the classifier."""
    return (*names(), "classifier")


def get(name: str) -> ModelSpec:
    for s in embedding_models():
        if s.name == name:
            return s
    raise KeyError(f"no embedding model named {name!r} (known: {', '.join(names())})")


def load_model(name: str, path: str):
    """(model with its tokenizer, metadata) of the embedding model ``name`` from ``path``."""
    return get(name).load(path)


def known_kind(spec: str) -> str | None:
    """The model a published name belongs to (``esm2_t36_3B_UR50D`` -> ``esm2``), None for a path."""
    if spec in CLASSIFIERS:
        return "classifier"
    return next((s.name for s in embedding_models() if spec in s.known_names), None)


def _function(ref: str) -> Callable:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
