"""Synthetic post-operative temporal-bone CBCT phantoms with ground truth (issue 2).

``generate_patient(seed, preset=..., orientation=..., **overrides)`` builds one patient in memory
(:class:`PhantomCase`: image, label, metal, contacts, params); ``write_patient`` writes its DICOM
series (plus optional clutter: a localizer series, a macOS ``._`` file, a README.txt) and the truth
on exactly the grid SimpleITK reads from that series; ``generate_cohort`` does both for N patients
and writes ``cohort.json``. ``cochseg3d phantom`` is the command line.

The model, stage by stage (each module cites its figures and says which are assumptions):

* :mod:`.anatomy` - petrous / mastoid bone, otic capsule, Worley-cell mastoid air cells, middle
  ear, ossicles, external and internal auditory canals, vestibule and semicircular canals, vessels,
  an optional mastoidectomy cavity, and a cochlear spiral whose basal-turn diameter (A value), turn
  count and lateral-wall length follow published ranges; left ears are mirror images.
* :mod:`cochseg3d.electrodes` (re-exported here) / :mod:`.implant` - a catalogue of MED-EL,
  Cochlear and Advanced Bionics arrays, angular insertion depths drawn from published
  distributions, contacts / wires / silicone as partial-volume fractions, and the lead leaving through the facial recess and mastoid.
* :mod:`.cbct` - projection-domain metal streaks, PSF and blooming, density-dependent noise,
  shading and cupping, rings, grey-value offset, saturation at 3071 / 4095, cylindrical field
  (the fast CT model, the default).
* :mod:`.rtk` / :mod:`.rtk_geometry` / :mod:`.xray` - the physics CT model (``ct_model="rtk"``):
  polychromatic itk-rtk forward projection of water, bone and Pt-Ir, scatter, Poisson noise, a
  detector floor, FOV truncation, FDK reconstruction.
* :mod:`.hard` - hard scanner conditions in both CT models: patient motion, a titanium screw,
  dental amalgam fillings, a head partly outside the field (off by default).
* :mod:`.placement` - abnormal array placements (``array_kind``): a tip fold-over, a partial
  insertion (extracochlear contacts), a kinked array; the truth says which flags a reader should raise.
* :mod:`.generate` - the draws, the label rule (what an annotator paints) and the acquisition grid
  (axial, coronal, sagittal, oblique); :mod:`.io` / :mod:`.dicom_write` - DICOM, truth, previews, cohorts;
  :mod:`.measure` - measuring contacts, angles and blooming back from the volumes.
"""

from cochseg3d.electrodes import CATALOGUE, VENDORS, ElectrodeModel, find_model, models_of
from .generate import ORIENTATIONS, OVERRIDES, PRESETS, PhantomCase, generate_patient

__all__ = [
    "CATALOGUE", "VENDORS", "ElectrodeModel", "find_model", "models_of", "ORIENTATIONS", "OVERRIDES",
    "PRESETS", "PhantomCase", "generate_patient",
]
from .io import generate_cohort, patient_seed, save_preview, write_patient  # noqa: E402

__all__ += ["generate_cohort", "patient_seed", "save_preview", "write_patient"]
