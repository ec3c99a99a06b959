"""COVID-19-AR (CAR: ICU admission): chest imaging of COVID-19 positive patients, University of Arkansas (UAMS).

Sources (public):
- Collection: TCIA, https://doi.org/10.7937/tcia.2020.py71-5978 ; Desai et al., "Chest imaging representing a
  COVID-19 positive rural U.S. population", Sci Data 7, 414 (2020): 233 radiographs and 23 CT of 105 patients, with
  a clinical sheet (demographics, comorbidities, labs, outcomes). Downloads are DICOM trees
  (``<collection>/<PatientID>/<study>/<series>/*.dcm``, NBIA Data Retriever); PatientIDs read
  ``COVID-19-AR-<digits>``, modality CR for the radiographs (NBIA series listings quoted in public code, e.g. a
  series of subject ``COVID-19-AR-16434356``, modality ``CR``, DOI 10.7937/tcia.2020.py71-5978).
- Label: column ``ICU Admit``, classes 0 / 1, keyed by ``PATIENT_ID``: cosbidev/Deep-Sick
  src/configs/PEFT_runs/experiment/databases/CAR.yaml (``label_column: ICU Admit``, ``id_column: PATIENT_ID``).
- Validation: 5-fold: cosbidev/Deep-Sick src/bash/TUTORIAL_1ALL.sh (``-d CAR -v 5``).

Not confirmed by a public source (overridable): the clinical sheet's file name (any single CSV/XLSX under RAW_DIR
is taken; ``--labels`` names it) and its spelling of the values (0/1, yes/no, true/false accepted); that
``PATIENT_ID`` equals the DICOM PatientID; the selection giving the paper's 99 images (we keep radiographs, CR/DX,
one per patient: the earliest; ``--all-images`` keeps every radiograph).
"""

from medtransfer.datasets.preset import DatasetPreset, Figures

CAR = DatasetPreset(
    name="CAR",
    dataset="COVID-19-AR",
    task="ICU admission: no (0) vs yes (1)",
    label_files=("*.xlsx", "*.csv"),
    join="PatientID",
    labels_key="PATIENT_ID",
    label_column="ICU Admit",
    positive=("1", "1.0", "YES", "Y", "TRUE"),
    negative=("0", "0.0", "NO", "N", "FALSE"),
    center="UAMS",
    modalities=("CR", "DX"),
    one_image_per_patient=True,
    strategy="kfold",
    paper=Figures(images=99, patients=None, centers=None, balance="71:29"),
    unconfirmed=("label sheet file name", "PATIENT_ID = DICOM PatientID", "one radiograph per patient"),
)
