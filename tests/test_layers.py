"""The package reads as the data flow: no module imports a layer above its own.

core → data → models → methods → evaluation → lightning → commands. Only the Lightning part and
the commands import Lightning. No module is exempt.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mrirecon"
LAYERS = ["core", "data", "models", "methods", "evaluation", "lightning", "commands"]
# Top-level modules: the exception type is part of the bottom layer, the entry points and the
# Python API (which the commands call) the top.
TOP_LEVEL = {"mrirecon": 0, "mrirecon.errors": 0, "mrirecon.internals": 0, "mrirecon.__main__": len(LAYERS) - 1, "mrirecon.api": len(LAYERS) - 1}
LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning", "lightning_fabric")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int | None:
    if name in TOP_LEVEL:
        return TOP_LEVEL[name]
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, module_name(path)


def test_every_module_has_a_layer():
    unplaced = [name for _, name in modules() if layer(name) is None]
    assert not unplaced, f"modules outside the layers {LAYERS}: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path, name in modules():
        own = layer(name)
        for target in imports(path):
            if target.startswith("mrirecon") and layer(target) is not None and layer(target) > own:
                upward.append(f"{name} ({LAYERS[own] if own < len(LAYERS) else own}) imports {target}")
    assert not upward, "\n".join(sorted(set(upward)))


def test_only_the_lightning_part_and_the_commands_import_lightning():
    allowed = {LAYERS.index("lightning"), LAYERS.index("commands")}
    offenders = sorted(
        f"{name} imports {target}"
        for path, name in modules()
        for target in imports(path)
        if target.split(".")[0] in LIGHTNING_PACKAGES and layer(name) not in allowed
    )
    assert not offenders, "\n".join(offenders)


def test_the_checker_sees_an_upward_import(tmp_path):
    # A test that cannot fail is no test: the walk must find an upward import where one is.
    fake = tmp_path / "fake.py"
    fake.write_text("from mrirecon.lightning.module import ReconModule\nimport pytorch_lightning\n")
    targets = imports(fake)
    assert "mrirecon.lightning.module" in targets and "pytorch_lightning" in targets
    assert layer("mrirecon.lightning.module") > layer("mrirecon.data.dataset")
