"""The code's shape: one place for config defaults, one straight path from rule to function,
and a model interface the engine uses without knowing the model (a third model in one module)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import h5py
import numpy as np
import torch

from virnucflow.cli import build_parser
from virnucflow.planning.config import schema_defaults
from virnucflow.engine import EmbedOptions
from virnucflow.steps.embed import embed_shard
from virnucflow.models.registry import names
from virnucflow.steps.shard import SHARD_HEADER

from .conftest import REPO

PACKAGE = REPO / "virnucflow"


def test_embedding_defaults_live_in_the_schema_only():
    defaults = schema_defaults()["embedding"]
    # EmbedOptions has no defaults of its own: the schema's come in through the config or EmbedOptions.defaults
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(EmbedOptions))
    assert dataclasses.asdict(EmbedOptions.defaults()) == {**defaults, "threads": 1}
    # the CLI's option defaults are the schema's
    embed = build_parser()._subparsers._group_actions[0].choices["embed"]
    got = {a.dest: a.default for a in embed._actions if a.dest in defaults}
    assert got == defaults
    # no function or dataclass of the package gives a parameter one of the schema's defaults again
    # ("auto" is everybody's word for "decide for me" and is left out)
    values = {v for v in defaults.values() if isinstance(v, str) and v != "auto"}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            given = []
            if isinstance(node, ast.arguments):
                given = [d.value for d in node.defaults + node.kw_defaults if isinstance(d, ast.Constant)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant):
                given = [node.value.value]
            assert not values.intersection(v for v in given if isinstance(v, str)), (path, node.lineno)


def test_the_schemas_enums_are_the_codes_choices():
    """The schema holds the list of precisions and attention backends; the code's tables of them (dtypes,
    backends) must offer exactly those, in the shared section and in each model's own."""
    from virnucflow.models.attention import ALL_BACKENDS
    from virnucflow.models.precision import DTYPES
    from virnucflow.planning.config import precisions, schema

    embedding = schema()["properties"]["embedding"]["properties"]
    per_model = schema()["$defs"]["model_embedding"]["properties"]
    assert precisions() == list(DTYPES) == per_model["precision"]["enum"]
    assert set(embedding["attention"]["enum"]) == set(ALL_BACKENDS) and per_model["attention"]["enum"] == embedding["attention"]["enum"]


def test_scripts_call_library_functions_directly():
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert "sys.path" not in text and "argv" not in text and "snakemake.rule" not in text, script
        assert "with rule_step(snakemake):" in text, script
    lines = [line for p in (REPO / "workflow").rglob("*") if p.is_file()
             for line in p.read_text(errors="replace").splitlines() if "sys.path" in line]
    assert len(lines) <= 1, lines


def test_engine_does_not_branch_on_the_model():
    text = (PACKAGE / "engine.py").read_text() + (PACKAGE / "steps" / "embed.py").read_text()
    assert not re.search(r"if\s+kind\s*==|kind\s*==\s*['\"]|['\"](esm2|dnabert_s)['\"]", text)


# --------------------------------------------------------------------------- a third model


def test_a_third_model_runs_in_the_engine(tmp_path, monkeypatch):
    """The engine runs a registered model it knows nothing of (tests/toy_plugin/toy_model.py)."""
    toy = _toy_module(monkeypatch)
    torch.save(torch.arange(18, dtype=torch.float32).view(6, 3), tmp_path / "toy.pt")
    (tmp_path / "m.json").write_text(json.dumps({"toy": {"spec": "toy", "path": str(tmp_path / "toy.pt"), "dim": 3,
                                                         "description": "toy"}}))
    rows = [(0, "a_chunk_1F1", "ACGT", "TR"), (1, "b_chunk_1F1", "GG", "G"), (2, "c_chunk_1F1", "ACGT", "TR")]
    (tmp_path / "s.tsv").write_text(SHARD_HEADER + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    embed_shard("toy", tmp_path / "m.json", tmp_path / "s.tsv", tmp_path / "toy.h5", EmbedOptions.defaults(device="cpu"))
    with h5py.File(tmp_path / "toy.h5") as h5:
        vectors, attrs = h5["embeddings"][()], dict(h5.attrs)
    table = np.arange(18, dtype=np.float32).reshape(6, 3)
    expected_a = table[[1, 2, 3, 4, 5, 1]].mean(0)  # [CLS]-like 1, A C G T, 1
    expected_b = table[[1, 4, 4, 1]].mean(0)
    np.testing.assert_allclose(vectors, [expected_a, expected_b, expected_a], rtol=1e-6)
    assert attrs["model_kind"] == "toy" and attrs["pooling"] == toy.ToyCounter.pooling


def _toy_module(monkeypatch):
    """tests/toy_plugin/toy_model.py imported and its SPEC registered after the built-in models."""
    import importlib

    from virnucflow.models import registry

    monkeypatch.syspath_prepend(str(REPO / "tests" / "toy_plugin"))
    toy = importlib.import_module("toy_model")
    monkeypatch.setattr(registry, "embedding_models", lambda: (*registry.BUILT_IN, toy.SPEC))
    return toy


def test_config_readme_documents_every_key_with_the_schemas_default():
    text = (REPO / "config" / "README.md").read_text()

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from walk(f"{prefix}{key}.", value)
            elif not isinstance(value, dict):
                yield f"{prefix}{key}", value

    def shown(value):
        return json.dumps(value) if not isinstance(value, str) else value

    # resources: one matrix, a row per rule and a column per key ("-": the rule has no such key)
    head = re.search(r"^\| rule \| `mem_mb` \| `runtime` \| `cpus` \| `gpu` \|.*\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M)
    assert head, "config/README.md: the resources matrix"
    matrix = {}
    for line in head.group(1).splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        matrix[cells[0].strip("`")] = dict(zip(("mem_mb", "runtime", "cpus", "gpu"), cells[1:5]))
    resources = schema_defaults()["resources"]
    assert set(matrix) == set(resources)
    for rule, keys in resources.items():
        assert matrix[rule] == {k: f"`{shown(keys[k])}`" if k in keys else "-" for k in matrix[rule]}, rule

    for key, value in walk("", {k: v for k, v in schema_defaults().items() if k != "resources"}):
        assert f"| `{key}` | `{shown(value)}` |" in text, key


def test_every_job_rule_declares_threads_and_resources_from_the_schema():
    """A rule that runs (script:) is either a local rule or declares threads and resources from
    ``resources.<its name>``; every ``resources`` key of the schema is such a rule."""
    declared, local = set(), set()
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=[ \t]*rule\b)", text)[1:]:
            named = re.match(r"\s*rule (\w+):", block) or re.search(r'name:\s*f"([\w{}]+)"', block)
            name = named.group(1).replace("{_model}", "{model}")
            if "script:" not in block and "shell:" not in block:
                continue
            if "localrule: True" in block:
                local.add(name)
                continue
            key = name.replace("{model}", "{_model}")
            want = (f'rule_threads(config, "{name}")', f'**rule_resources(config, "{name}")') if "{" not in name \
                else (f'rule_threads(config, f"{key}")', f'**rule_resources(config, f"{key}")')
            assert all(w in block for w in want), (smk.name, name)
            declared.add(name)
    rules = {r.replace("{model}", m) for r in declared for m in ("esm2", "dnabert_s")}
    assert set(schema_defaults()["resources"]) == rules
    assert local == {"build_demo_models", "check_model", "models_manifest"}


def test_every_rule_that_runs_has_a_log_and_a_benchmark_the_report_names_it_by():
    """`log:` and `benchmark:` on every rule with a script; the benchmark path is one the report's
    time-per-rule table attributes to that rule (report.benchmark_rule)."""
    from virnucflow.steps.report import benchmark_rule

    seen = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule\b)", smk.read_text())[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            if "script:" not in block:
                continue
            assert re.search(r"\n    log:\n", block), (smk.name, name)
            bench = re.search(r'\n    benchmark:\n\s+"([^"]+)"', block)
            assert bench, (smk.name, name)
            path = Path(bench.group(1))
            assert path.parts[:2] == ("logs", "benchmarks"), (name, path)
            seen[name] = benchmark_rule(path.parts[2:])
    assert seen and all(attributed == name for name, attributed in seen.items()), seen
    assert {"embed", "fp32_compare_sample", "check_model", "report_run", "models_manifest"} <= set(seen)


def test_the_snakefile_imports_no_torch():
    """Every Snakemake start (and on a cluster every job) parses the Snakefile: the modules
    common.smk imports must not pull in torch (1-2 s each time) or pandas."""
    import subprocess
    import sys

    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    imports = re.findall(r"^from virnucflow[^\n(]*(?:\([^)]*\))?[^\n]*", text, re.M)  # one line or (...)
    assert len(imports) >= 5
    code = "\n".join(imports) + "\nimport sys\nprint(sorted(m for m in ('torch', 'pandas', 'h5py') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_a_model_check_imports_no_torch_dynamo(tmp_path):
    """check_model builds each model on the meta device for its shapes: no initialiser may run
    there, since their meta implementations import torch._dynamo (1 s here, ~4 s on the GPU
    machines, on the critical path before the first embedding job)."""
    import subprocess
    import sys

    from virnucflow.steps.demo import build_demo_models

    build_demo_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth"})
    code = ("import sys; from pathlib import Path; from virnucflow.models.manifest import check_model\n"
            f"for kind, path in [('esm2', {str(tmp_path / 'e.pt')!r}), ('dnabert_s', {str(tmp_path / 'd')!r}), "
            f"('classifier', {str(tmp_path / 'c.pth')!r})]:\n"
            "    check_model(kind, path, None, allow_download=False)\n"
            "print('torch._dynamo' in sys.modules, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "True"]


def test_a_cpu_embedding_imports_no_torch_dynamo(tmp_path):
    """On a CPU, FlexAttention is never used, so choosing the backend must not build it:
    torch.compile imports torch._dynamo and Inductor (3.6 s of every CPU embedding job here)."""
    import subprocess
    import sys

    from virnucflow.steps.demo import build_demo_models

    build_demo_models({"esm2": tmp_path / "e.pt", "dnabert_s": tmp_path / "d", "classifier": tmp_path / "c.pth"})
    code = ("import sys; from virnucflow.engine import Embedder, EmbedOptions; "
            "from virnucflow.models.registry import load_model\n"
            f"for kind, path in [('esm2', {str(tmp_path / 'e.pt')!r}), ('dnabert_s', {str(tmp_path / 'd')!r})]:\n"
            "    for attention in ('auto', 'flex'):\n"
            "        e = Embedder.create(load_model(kind, path)[0], EmbedOptions.defaults(device='cpu', attention=attention))\n"
            "        print(kind, attention, e.backend)\n"
            "print('torch._dynamo' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["esm2 auto sdpa", "esm2 flex sdpa", "dnabert_s auto sdpa", "dnabert_s flex sdpa",
                                       "False"]


def test_the_schemas_model_sections_are_the_embedding_models():
    """config.model_options reads the per-model sections from the schema (no torch import in the
    Snakefile); the engine runs the models of the interface: both lists must be the same."""
    from virnucflow.planning.config import model_sections

    assert sorted(model_sections()) == sorted(names())


def test_every_run_level_file_name_is_a_reserved_sample_name():
    """results/{sample}/, logs/{sample}/ and logs/benchmarks/{sample}/ sit beside the run's own files
    and folders: every such name the rules (or the Makefile's report) write is refused as a sample name."""
    from virnucflow.io.samples import RESERVED_NAMES

    found = set()
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Makefile"]:
        found |= {m.group(2) for m in re.finditer(r'(results|logs)/(?:benchmarks/)?([^"/{\s]+)', path.read_text())}
    found = {n for n in found if "*" not in n and not n.startswith("demo_")}  # the demo's own samples (Makefile)
    assert found, "no run-level paths found"
    assert sorted(found - set(RESERVED_NAMES)) == []


# --------------------------------------------------------------------------- a package a newcomer can read

MAX_MODULE_LINES = 400


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any level: a lazy import is a dependency too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "share" in path.relative_to(PACKAGE).parts:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    found = f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                    if found in modules and found != name:
                        graph[name].add(found)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules and a.name != name}
    return graph


def test_no_import_circle_in_the_package():
    graph = _import_graph()
    assert len(graph) > 40  # every module was read

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert circles == []


def test_every_module_is_short_enough_to_hold_in_ones_head():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
