"""Synthetic post-operative temporal-bone CBCT phantoms with ground truth (issue 2).

``generate_patient`` builds one patient in memory; ``write_patient`` writes its DICOM series (plus
optional clutter) and truth; ``generate_cohort`` does both for N patients and writes ``cohort.json``.
"""

from .electrodes import CATALOGUE, VENDORS, ElectrodeModel, find_model, models_of
from .generate import ORIENTATIONS, OVERRIDES, PRESETS, PhantomCase, generate_patient

__all__ = [
    "CATALOGUE", "VENDORS", "ElectrodeModel", "find_model", "models_of", "ORIENTATIONS", "OVERRIDES",
    "PRESETS", "PhantomCase", "generate_patient",
]
from .io import generate_cohort, patient_seed, save_preview, write_patient  # noqa: E402

__all__ += ["generate_cohort", "patient_seed", "save_preview", "write_patient"]
