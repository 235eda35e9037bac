import pytest

import manifests
from converters import DATASETS, converter_class


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_has_a_valid_manifest_and_converter(name):
    manifest = manifests.load(name)
    assert manifest["name"] == name
    assert manifest["access"] in ("public", "by request")
    assert manifest["citation"].strip().startswith("@")
    assert manifest["homepage"].startswith("http")
    assert manifest["counts"]["paper"] > 0
    assert manifest["counts"]["official"], "official counts per split"
    assert manifest["files"], "expected files"
    assert converter_class(name).name == name


def test_manifest_validation_names_the_file(tmp_path):
    bad = tmp_path / "celeba.yaml"
    bad.write_text("name: celeba\n")
    with pytest.raises(ValueError, match=r"celeba.yaml: manifest lacks title"):
        manifests.validate({"name": "celeba"}, bad)
