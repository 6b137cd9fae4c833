"""Electrode contact centres in patient mm from an electrode label and its CT image.

:func:`find_contacts` (:mod:`.finder`) tries the strategies in order, each in its own module:

* :mod:`.analysis` - the label and CT cropped, the centreline (:mod:`.centreline`: skeleton,
  bright run, tracking from the apex, apical curl, outward shift) and the CT's profile along it
  (:mod:`.profile`), once per search.
* :mod:`.peaks` - separate contacts (MED-EL; others at fine voxels) as the profile's peaks; where
  they saturate flat, midway between its dips.
* :mod:`.layouts` - the catalogue's layouts (:mod:`cochseg3d.electrodes`) by name, or, none
  named, assumed from the peaks' spacing, the gaps, the blobs or the band's length.
* :mod:`.comb` / :mod:`.band` - a layout's comb: merged contacts (Cochlear, AB at CBCT
  resolution) evenly between their band's two ends, each end a calibrated distance from the end
  contact; separate ones phased on the profile's ripple.
* :mod:`.refine` - contacts moved to their intensity centroid.
* :mod:`.blobs` - separate contacts the centreline missed, from the label's saturated blobs.

The tuned numbers and the measured tables are data (:mod:`.calibration`, ``calibration.json``),
written by scripts/calibrate_contacts.py and chosen with ``calibration=``.
"""

from cochseg3d.contacts.calibration import Calibration, CalibrationError
from cochseg3d.contacts.finder import find_contacts
from cochseg3d.contacts.layouts import electrode_layouts, electrode_spec
from cochseg3d.contacts.result import Contacts

__all__ = ["Calibration", "CalibrationError", "Contacts", "electrode_layouts", "electrode_spec", "find_contacts"]
