"""docs/registry.md's worked example runs as written: user block file, YAML, registration, build, and
the three-line test of the user's model with the shipped kit."""
from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "registry.md"


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


def test_registry_doc_example_runs(tmp_path, monkeypatch, capsys):
    blocks = _blocks(DOC.read_text())
    files = {}
    scripts = []
    for lang, body in blocks:
        first = body.splitlines()[0] if body.strip() else ""
        m = re.match(r"# file: (\S+)", first)
        if m:
            files[m.group(1)] = body
        elif lang == "python" and "RegistryError" not in body and "MODELS.names()" not in body:
            scripts.append(body)
    assert set(files) == {"my_blocks.py", "my_model.yaml", "test_my_model.py"}
    assert len(scripts) == 2, "registration snippet and the build/run snippet"
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from e3relax.registry import BLOCKS

    try:
        for i, code in enumerate(scripts):
            (tmp_path / f"snippet{i}.py").write_text(code)
            runpy.run_path(str(tmp_path / f"snippet{i}.py"), run_name="__main__")
        out = capsys.readouterr().out
        assert "3 torch.Size([8, 3]) torch.Size([1, 3, 3])" in out
        assert "element_step_position_update" in BLOCKS
        _run_test_class(runpy.run_path(str(tmp_path / "test_my_model.py"))["TestMyModel"], expected=6)
    finally:
        BLOCKS._classes.pop("element_step_position_update", None)
        sys.modules.pop("my_blocks", None)


def _run_test_class(cls: type, expected: int) -> None:
    """Call every ``test_*`` method of a kit test class, as pytest would collect them."""
    assert cls.__name__.startswith("Test")
    names = [n for n in dir(cls) if n.startswith("test_") and callable(getattr(cls, n))]
    assert len(names) == expected, names
    for name in names:
        getattr(cls(), name)()


def test_registry_doc_error_messages_are_real():
    from e3relax.registry import BLOCKS, RegistryError

    with pytest.raises(RegistryError, match="Did you mean 'gaussian_rbf'"):
        BLOCKS.get("gausian_rbf")
    with pytest.raises(RegistryError, match=r"unknown keyword\(s\) step_scal; accepted: hidden_channels, identity_init, step_scale"):
        BLOCKS.build({"name": "position_update", "step_scal": 0.5}, hidden_channels=16)
    assert torch.get_default_dtype() == torch.float32
