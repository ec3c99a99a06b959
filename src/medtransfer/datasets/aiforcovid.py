"""AIforCOVID (AFC: severity, AFC_m: mortality): chest X-rays of COVID-19 patients from six Italian hospitals.

Sources (public):
- Data set: Soda et al., "AIforCOVID: predicting the clinical outcomes in patients with COVID-19 applying AI to
  chest-X-rays. An Italian multicentre study", Medical Image Analysis 2021 (arXiv 2012.06531); download from
  https://aiforcovid.radiomica.it/ (registration).
- Raw layout: three releases, DICOM folders ``imgs/``, ``imgs_r2/``, ``imgs_r3/`` and clinical sheets
  ``AIforCOVID.xlsx``, ``AIforCOVID_r2.xlsx``, ``AIforCOVID_r3.xlsx`` beside them; each DICOM file is named after
  its sheet row's ``ImageFile`` value (``P_1.dcm`` <-> ``P_1``): cosbidev/Multi-Dataset-Multi-Task-Learning-for-
  COVID-19-Prognosis, src/preprocessing/AFC/ClinicalDataCreation_AFC.py and src/datasets/usage/
  ValidationFilesCreation.py (``set_index('ImageFile')``, ``str(img) + '.dcm'``).
- Severity label: column ``Prognosis``, values ``MILD`` / ``SEVERE`` (positive): same repository,
  src/preprocessing/AFC/segmentation_AFC.py (``y_label = "Prognosis"``, ``categories = ["MILD", "SEVERE"]``).
- Center: column ``Hospital``, upper-cased, six hospitals A-F: ValidationFilesCreation.py
  (``clinical_meta_global['Hospital'].str.upper()``) and data/processed/AFC/centers (``{0: 'A', ..., 5: 'C'}``).
- 1,585 images in all: data/processed/AFC/all.txt of the same repository lists 1,585 rows.
- Validation: leave one center out: cosbidev/Deep-Sick src/bash/TUTORIAL_1ALL.sh (``-d AFC -v L``,
  ``-d AFC_death -v L``; ``L`` = loCo in src/bash/launch_bash.py).
- Mortality task: cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/databases/AFC_death.yaml (classes
  ``ALIVE`` / ``DEATH``, read from the authors' processed ``clinical_data_AFC.csv``).

Not confirmed by a public source (overridable): the raw sheet's mortality column name (``Death`` assumed) and its
values (0/1 or ALIVE/DEATH accepted); one image per patient (the sheet has one row per image file, so each file's
``ImageFile`` is taken as the patient).
"""

from medtransfer.datasets.preset import DatasetPreset, Figures

_COMMON = dict(
    dataset="AIforCOVID",
    label_files=("AIforCOVID*.xlsx",),
    stack_label_files=True,
    join="file",
    labels_key="ImageFile",
    center_column="Hospital",
    patient_from="key",
    strategy="loco",
)

AFC = DatasetPreset(
    name="AFC",
    task="severity: MILD (0) vs SEVERE (1)",
    label_column="Prognosis",
    positive=("SEVERE",),
    negative=("MILD",),
    paper=Figures(images=1585, patients=None, centers=6, balance="53:47"),
    unconfirmed=("patient = ImageFile (one image per patient)",),
    **_COMMON,
)

AFC_M = DatasetPreset(
    name="AFC_m",
    task="mortality: alive (0) vs death (1)",
    label_column="Death",
    positive=("1", "1.0", "DEATH", "DEAD", "YES", "TRUE"),
    negative=("0", "0.0", "ALIVE", "NO", "FALSE"),
    paper=Figures(images=None, patients=None, centers=6, balance="85:15"),
    unconfirmed=("label column 'Death' and its values", "patient = ImageFile (one image per patient)"),
    **_COMMON,
)
