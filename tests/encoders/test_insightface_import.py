"""HyperLoRA imports only insightface's model zoo; the package still works fully for others."""

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_only_the_model_zoo_is_imported_and_the_rest_follows_on_demand():
    out = _run(
        """
        import sys
        from hyperlora_ext.encoders.insightface_import import model_zoo
        assert callable(model_zoo().get_model)
        print("app" if "insightface.app" in sys.modules else "no app")
        print("albumentations" if "albumentations" in sys.modules else "no albumentations")
        import insightface  # another extension, later
        print(insightface.__version__)
        print(insightface.app.FaceAnalysis.__name__)
        print("albumentations" if "albumentations" in sys.modules else "no albumentations")
        """
    )
    lines = out.splitlines()
    assert lines[:2] == ["no app", "no albumentations"]
    assert lines[2][0].isdigit() and lines[3:] == ["FaceAnalysis", "albumentations"]


def test_an_insightface_imported_before_is_used_as_it_is():
    out = _run(
        """
        import insightface
        from hyperlora_ext.encoders.insightface_import import model_zoo
        assert model_zoo() is insightface.model_zoo.model_zoo
        print(type(insightface).__name__)
        """
    )
    assert out.strip() == "module"
