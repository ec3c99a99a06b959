"""CoCross (CC: ICU outcome): COVID-19 chest X-rays with several images per patient.

Sources (public):
- Label: column ``ICU Outcome``, values ``Death`` (positive) / ``Alive``, keyed by ``ID``: cosbidev/Deep-Sick
  src/configs/PEFT_runs/experiment/databases/CoCross.yaml (``label_column: ICU Outcome``, ``id_column: ID``,
  ``classes: [Death, Alive]``).
- Validation: 5-fold: cosbidev/Deep-Sick src/bash/TUTORIAL_1ALL.sh (``-d CoCross -v 5``).
- The paper's figures: 389 images of 150 patients, 63:37 (the benchmark's own table; given in its issue).

Not confirmed by a public source (overridable): the raw download's layout. No public page describing it was
found; this preset assumes a DICOM tree whose PatientID equals the sheet's ``ID`` and a single CSV/XLSX sheet
under RAW_DIR (``--labels``, ``--join``, ``--labels-key`` change that), and one center.
"""

from medtransfer.datasets.preset import DatasetPreset, Figures

CC = DatasetPreset(
    name="CC",
    dataset="CoCross",
    task="ICU outcome: alive (0) vs death (1)",
    label_files=("*.xlsx", "*.csv"),
    join="PatientID",
    labels_key="ID",
    label_column="ICU Outcome",
    positive=("Death", "Dead", "Deceased", "1"),
    negative=("Alive", "Survived", "Discharged", "0"),
    center="CoCross",
    strategy="kfold",
    paper=Figures(images=389, patients=150, centers=None, balance="63:37"),
    unconfirmed=("raw layout (DICOM tree, PatientID = ID)", "label sheet file name"),
)
