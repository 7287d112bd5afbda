"""Label sets shared by the dataset adapters (columns) and the models (default outputs).

They live in pipelines so that data code imports them without loading TensorFlow and the models;
`zoo.labels` re-exports them.
"""

RSNA_ICH = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")

# NIH ChestX-ray14, in the order of the dataset paper (Wang et al., CVPR 2017).
CXR14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)

BINARY = ("normal", "abnormal")
MYOSITIS = ("normal", "myositis")
