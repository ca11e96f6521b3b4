import pytest

from openflash.deps.imports import distribution_for_module


@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("cv2", "opencv-python"),
        ("PIL", "Pillow"),
        ("PIL.Image", "Pillow"),
        ("sklearn", "scikit-learn"),
        ("sklearn.linear_model", "scikit-learn"),
        ("yaml", "PyYAML"),
        ("bs4", "beautifulsoup4"),
        ("skimage", "scikit-image"),
        ("dateutil", "python-dateutil"),
        ("dateutil.parser", "python-dateutil"),
        ("google.protobuf", "protobuf"),
        ("torch", "torch"),
        ("pandas.core", "pandas"),
    ],
)
def test_import_names_map_to_distributions(module: str, distribution: str) -> None:
    assert distribution_for_module(module) == distribution
