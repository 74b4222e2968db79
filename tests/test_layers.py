"""Imports point down: cli -> sweeps -> runs -> outputs -> pipeline -> analysis -> stages -> types."""

import ast

from conftest import REPO

PACKAGE = REPO / "src" / "sparseq"
RANK = {
    "types": 0,
    "stages": 1,
    "analysis": 2,
    "pipeline": 3,
    "outputs": 4,
    "runs": 5,
    "sweeps": 6,
    "cli": 7,
    "__init__": 7,
}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def test_no_module_imports_a_layer_above_its_own():
    violations = []
    top_level = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py")
    assert top_level == ["__init__.py", "cli.py", "types.py"]
    for path in PACKAGE.rglob("*.py"):
        own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        own_rank = RANK[layer(own)]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparseq."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("sparseq.")]
            for name in names:
                if RANK[layer(name)] > own_rank:
                    violations.append(f"{own} imports {name}")
    assert not violations, violations


def test_every_layer_says_what_it_may_import():
    for folder in ("stages", "analysis", "pipeline", "runs", "outputs", "sweeps"):
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc and "import" in doc, folder
