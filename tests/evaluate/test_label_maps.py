import pytest

from pipelines import label_maps as L
from pipelines.datasets import cq500, physionet
from pipelines.labels import RSNA_ICH


def test_tables_agree_with_the_adapters():
    assert cq500.FINDINGS == L.RSNA_TO_CQ500
    assert set(L.RSNA_TO_CQ500) == set(RSNA_ICH) == set(L.RSNA_TO_PHYSIONET)
    for rsna, column in physionet.SUBTYPE_COLUMNS.items():
        assert L.RSNA_TO_PHYSIONET[rsna] == column
    assert L.PHYSIONET_NEGATED == {"No_Hemorrhage"}


def test_same_names_pair_in_model_order():
    pairs = L.resolve(["b", "a"], ["A", "b", "c"])
    assert [(p.model, p.dataset, p.how) for p in pairs] == [("b", "b", "same name"),
                                                            ("a", "A", "same name")]


def test_rsna_model_on_cq500_codes_and_physionet_columns():
    pairs = L.resolve(RSNA_ICH, ["ICH", "IPH", "IVH", "SDH", "EDH", "SAH"])
    assert {p.model: p.dataset for p in pairs} == L.RSNA_TO_CQ500
    assert all(p.how == "CQ500 code" and not p.negate for p in pairs)
    pairs = L.resolve(RSNA_ICH, ["Intraventricular", "Intraparenchymal", "Subarachnoid",
                                 "Epidural", "Subdural", "No_Hemorrhage"])
    by_model = {p.model: p for p in pairs}
    assert by_model["any"].dataset == "No_Hemorrhage" and by_model["any"].negate
    assert "1 - No_Hemorrhage" in by_model["any"].text()
    # and the other way round: a model trained with the CQ500 codes, scored on RSNA names
    pairs = L.resolve(["ICH", "SDH"], RSNA_ICH)
    assert [(p.model, p.dataset) for p in pairs] == [("ICH", "any"), ("SDH", "subdural")]


def test_subsets_are_fine_but_unrelated_labels_are_an_error():
    assert len(L.resolve(["any"], RSNA_ICH)) == 1  # model scores a subset of the columns
    assert len(L.resolve(RSNA_ICH, ["any"])) == 1  # dataset labels only some outputs
    with pytest.raises(L.LabelMappingError, match="do not match the dataset's labels") as err:
        L.resolve(["normal", "abnormal"], RSNA_ICH)
    assert "--label-map" in str(err.value)
    with pytest.raises(L.LabelMappingError):  # a partial overlap is not a mapping
        L.resolve(["normal", "abnormal"], ["normal", "stone"])


def test_explicit_label_map():
    given = L.parse_label_map("abnormal=stone")
    pairs = L.resolve(["normal", "abnormal"], ["normal", "stone"], given=given)
    assert [(p.model, p.dataset, p.how) for p in pairs] == [("normal", "normal", "same name"),
                                                            ("abnormal", "stone", "given")]
    with pytest.raises(L.LabelMappingError, match="not MODEL_LABEL=DATASET_LABEL"):
        L.parse_label_map("abnormal:stone")
    with pytest.raises(L.LabelMappingError, match="dataset label 'tumour'"):
        L.resolve(["normal", "abnormal"], ["normal", "stone"], given={"abnormal": "tumour"})
