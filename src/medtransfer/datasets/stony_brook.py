"""COVID-19-NY-SBU (NY_small: one CXR per patient; NY_all: every CXR, grouped by patient), Stony Brook University.

Sources (public):
- Collection: TCIA, "Stony Brook University COVID-19 Positive Cases" (COVID-19-NY-SBU),
  https://doi.org/10.7937/TCIA.BBAG-2923 ; DICOM trees (``<collection>/<PatientID>/<study>/<series>/*.dcm``) and a
  clinical CSV, one row per patient; 1,384 patients (collection page
  https://www.cancerimagingarchive.net/collection/covid-19-ny-sbu/ as quoted in public notes).
- Label: column ``last.status`` (``deceased`` positive / ``discharged``), keyed by ``to_patient_id``:
  cosbidev/Deep-Sick src/configs/PEFT_runs/experiment/databases/NY.yaml and NY_all.yaml (``label_column:
  'last.status'``, ``id_column: 'to_patient_id'``); the ICU variant uses ``is_icu`` (NY_icu.yaml), selectable with
  ``--label-column is_icu --positive True --negative False``.
- Validation: 5-fold: cosbidev/Deep-Sick src/bash/TUTORIAL_1ALL.sh (``-d NY -v 5``, ``-d NY_all -v 5``).

Not confirmed by a public source (overridable): which of the two outcomes the paper's NY figures use (mortality
assumed, the default ``NY`` config); the clinical file's name (any single CSV/XLSX under RAW_DIR; ``--labels``);
that ``to_patient_id`` equals the DICOM PatientID; which CXR NY_small keeps (the earliest by study date here).
Only radiographs (CR, DX) are kept: the task is chest X-ray.
"""

from medtransfer.datasets.preset import DatasetPreset, Figures

_COMMON = dict(
    dataset="COVID-19-NY-SBU",
    task="mortality: discharged (0) vs deceased (1)",
    label_files=("*.csv", "*.xlsx"),
    join="PatientID",
    labels_key="to_patient_id",
    label_column="last.status",
    positive=("deceased",),
    negative=("discharged",),
    center="SBU",
    modalities=("CR", "DX"),
    strategy="kfold",
)

NY_SMALL = DatasetPreset(
    name="NY_small",
    one_image_per_patient=True,
    paper=Figures(images=1365, patients=1365, centers=None, balance="87:13"),
    unconfirmed=("outcome column (mortality assumed)", "which CXR is kept (earliest)", "label file name"),
    **_COMMON,
)

NY_ALL = DatasetPreset(
    name="NY_all",
    paper=Figures(images=13639, patients=1365, centers=None, balance="64:36"),
    unconfirmed=("outcome column (mortality assumed)", "label file name"),
    **_COMMON,
)
